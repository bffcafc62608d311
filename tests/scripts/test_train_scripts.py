"""The training scripts run end to end on a few steps (full training is not part of CI)."""

import importlib.util
import json
from pathlib import Path

import pytest

from cgan.checkpoint import load_generator

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_cgan_smoke(tmp_path, capsys):
    out = tmp_path / "g.pth"
    assert _load("train_cgan").main(["--epochs", "1", "--max-steps", "2", "--eval-every", "1", "--out", str(out)]) == 0
    assert load_generator(out).output_dim == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["epoch"] == 1 and 0.0 <= lines[0]["label_accuracy"] <= 1.0
    assert (tmp_path / "g.epoch001.pth").is_file()


@pytest.mark.slow
def test_train_classifier_smoke(tmp_path, capsys):
    assert _load("train_classifier").main(["--epochs", "1", "--max-steps", "2", "--out-dir", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "mnist_classifier.json").read_text())
    assert meta["holdout_digits"] == 500 and 0.0 <= meta["holdout_accuracy"] <= 1.0
    assert (tmp_path / "mnist_classifier.onnx").is_file()
