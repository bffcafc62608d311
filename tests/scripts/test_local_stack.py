"""`make up`'s environment (scripts/local_stack.py), as real Airflow reads it."""

import subprocess

from scripts import local_stack


def _api_host(env: dict) -> str:
    proc = subprocess.run([local_stack.AIRFLOW, "config", "get-value", "api", "host"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_the_ui_binds_to_loopback_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(local_stack, "VAR", tmp_path)
    monkeypatch.delenv("CGAN_UI_HOST", raising=False)
    assert _api_host(local_stack.local_env("http://127.0.0.1:1")) == "127.0.0.1"  # Airflow's default: 0.0.0.0
    monkeypatch.setenv("CGAN_UI_HOST", "0.0.0.0")
    assert _api_host(local_stack.local_env("http://127.0.0.1:1")) == "0.0.0.0"
