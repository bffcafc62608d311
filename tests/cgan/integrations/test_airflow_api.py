"""`cgan register-checkpoint` errors found before or at the first HTTP call (no Airflow needed):
each names the problem and the fix, and never the password. Against the real Airflow (401, unknown
asset, the event and the run it starts): tests/dags/test_checkpoint_trigger.py."""

from __future__ import annotations

import socket

import pytest

from cgan.cli import main

PASSWORD = "s3cr3t-airflow-pass"


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("CGAN_AIRFLOW_USER", "ops")
    monkeypatch.setenv("CGAN_AIRFLOW_PASSWORD", PASSWORD)
    monkeypatch.delenv("CGAN_AIRFLOW_API_URL", raising=False)
    monkeypatch.delenv("CGAN_CHECKPOINT_ROOTS", raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(capsys, *args) -> tuple[int, str]:
    code = main(["register-checkpoint", *args])
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    return code, out.out + out.err


def test_unreachable_api_names_the_url_and_the_fix(creds, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    code, out = run(capsys, "models/cgan_generator.pth", "--api-url", url)
    assert code == 2
    assert f"POST {url}/auth/token: cannot reach Airflow" in out
    assert "is its api-server running there? Pass --api-url or set CGAN_AIRFLOW_API_URL" in out
    assert "is a generator state_dict (C=1)" in out  # the checkpoint was read first


@pytest.mark.parametrize("url,needle", [
    ("ftp://airflow:8080", "must be http(s)://host[:port]"),
    ("http://ops:pw@airflow:8080", "with no user:password in it"),
    ("127.0.0.1:8080", "must be http(s)://host[:port]"),
])
def test_a_bad_api_url_is_refused(creds, capsys, url, needle):
    code, out = run(capsys, "models/cgan_generator.pth", "--api-url", url, "--no-check")
    assert code == 2 and needle in out, out
    assert "pw@" not in out


def test_missing_credentials_name_the_variables(creds, capsys, monkeypatch):
    monkeypatch.delenv("CGAN_AIRFLOW_PASSWORD")
    code, out = run(capsys, "models/cgan_generator.pth", "--no-check")
    assert code == 2 and "no Airflow credentials: set CGAN_AIRFLOW_USER and CGAN_AIRFLOW_PASSWORD" in out
    assert "http://127.0.0.1:8080" in out  # the default API URL


def test_a_checkpoint_outside_the_roots_is_refused_before_any_request(creds, capsys, tmp_path):
    code, out = run(capsys, "/etc/passwd", "--api-url", f"http://127.0.0.1:{_closed_port()}")
    assert code == 2 and "is outside the checkpoint roots (models)" in out and "CGAN_CHECKPOINT_ROOTS" in out
    assert "auth/token" not in out


def test_a_missing_or_unreadable_checkpoint_is_refused(creds, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", str(tmp_path))
    code, out = run(capsys, str(tmp_path / "nope.pth"))
    assert code == 2 and "not found" in out
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    code, out = run(capsys, str(tmp_path / "junk.pth"))
    assert code == 2 and f"refused to load {tmp_path / 'junk.pth'}" in out


def test_an_s3_checkpoint_is_checked_where_credentials_allow(creds, capsys, monkeypatch, local_s3):
    """Against the real local S3 server (SeaweedFS): an existing object passes (then the request
    fails: no Airflow here), a missing one and a wrong secret are refused, the secret never shown."""
    local_s3["client"].create_bucket(Bucket="regckpt")
    local_s3["client"].put_object(Bucket="regckpt", Key="g/v2.pth", Body=b"x" * 1234)
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", "s3://regckpt/g")
    monkeypatch.setenv("CGAN_S3_ENDPOINT_URL", local_s3["endpoint"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", local_s3["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", local_s3["secret_key"])
    url = f"http://127.0.0.1:{_closed_port()}"
    code, out = run(capsys, "s3://regckpt/g/v2.pth", "--api-url", url)
    assert code == 2 and "checkpoint s3://regckpt/g/v2.pth: s3://regckpt/g/v2.pth exists (1234 bytes)" in out
    assert "cannot reach Airflow" in out
    code, out = run(capsys, "s3://regckpt/g/none.pth", "--api-url", url)
    assert code == 2 and "s3://regckpt/g/none.pth does not exist" in out and "upload it first" in out
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    code, out = run(capsys, "s3://regckpt/g/v2.pth", "--api-url", url)
    assert code == 2 and "cannot check s3://regckpt/g/v2.pth" in out and "pass --no-check" in out, out
    assert "wrong-secret-value" not in out and local_s3["secret_key"] not in out
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    code, out = run(capsys, "s3://regckpt/g/v2.pth", "--api-url", url)
    assert code == 2 and "not checked here (no S3 credentials in this environment" in out
