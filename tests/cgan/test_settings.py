"""cgan.settings is the one list of the deployment's variables: every CGAN_* variable that the
code of the layers (cgan/, operators/, dags/, plugins/) names is a row of its tables."""

from __future__ import annotations

import re
from pathlib import Path

import cgan.settings

REPO = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\bCGAN_[A-Z0-9_]*[A-Z0-9]\b(?!\.p[kt]l?h?)")  # CGAN_G.pkl/.pth: checkpoints


def listed() -> set[str]:
    rows = [line for line in (cgan.settings.__doc__ or "").splitlines() if line.startswith("| CGAN_")]
    return {name.strip() for row in rows for name in row.split("|")[1].split(",")}


def named_in(text: str) -> set[str]:
    return set(VARIABLE.findall(text))


def test_every_variable_the_code_names_is_listed():
    unlisted = {}
    for folder in ("cgan", "operators", "dags", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            for name in named_in(path.read_text()) - listed():
                unlisted.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not unlisted, f"add these to cgan/settings.py's table (name, default, meaning): {unlisted}"


def test_the_check_can_fail():
    assert named_in('os.environ.get("CGAN_SOMETHING_NEW")') - listed() == {"CGAN_SOMETHING_NEW"}
    assert {"CGAN_NPU_DEVICES", "CGAN_ALERT_SMTP_PORT", "CGAN_AIRFLOW_PASSWORD"} <= listed()
