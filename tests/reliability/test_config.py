"""Deployment settings that cannot work are refused with the variable's name and the fix."""

import pytest

from cgan import settings
from cgan.settings import ConfigError


@pytest.mark.parametrize("value, message", [
    ("Bad_Bucket", "not a valid S3 bucket name"),
    ("ab", "not a valid S3 bucket name"),
    ("../cgan", "not a valid S3 bucket name"),
    ("cgan;rm -rf", "not a valid S3 bucket name"),
    ("192.168.1.1", "not a valid S3 bucket name"),
])
def test_bad_publish_bucket(monkeypatch, value, message):
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", value)
    with pytest.raises(ConfigError, match=f"CGAN_PUBLISH_BUCKET: .*{message}"):
        settings.publish_bucket()


@pytest.mark.parametrize("value, message", [
    ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
    ("s3://cgan/a b", "unsafe part"),
    ("s3://cgan/a/../b", "unsafe part"),
    ("file:///srv/x/../../etc", "'..' is not allowed"),
    ("relative/dir", "absolute path"),
    ("file://otherhost/srv/x", "absolute path"),
    ("ftp://host/x", "unsupported scheme"),
])
def test_bad_artifact_root(monkeypatch, value, message):
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", value)
    with pytest.raises(ConfigError, match=f"CGAN_ARTIFACT_ROOT=.*cannot be used: .*{message}"):
        settings.artifact_root()


def test_credentials_in_the_artifact_root_are_refused_and_never_repeated(monkeypatch):
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", "s3://AKIAEXAMPLE:s3cr3t-value@cgan/artifacts")
    with pytest.raises(ConfigError, match="credentials do not belong in the URI") as err:
        settings.artifact_root()
    assert "s3cr3t-value" not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)


def test_good_settings_pass(monkeypatch, tmp_path):
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", "s3://cgan-artifacts/team.a/runs")
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "cgan.published-1")
    assert settings.artifact_root() == "s3://cgan-artifacts/team.a/runs"
    assert settings.publish_bucket() == "cgan.published-1"
    monkeypatch.delenv("CGAN_ARTIFACT_ROOT")
    monkeypatch.delenv("CGAN_PUBLISH_BUCKET")
    assert settings.artifact_root().startswith("file:///") and settings.publish_bucket() == "cgan"


@pytest.mark.parametrize("value, expected", [(None, 30.0), ("1", 1.0), ("0.5", 0.5), ("0", 0.0)])
def test_retry_delay(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CGAN_RETRY_DELAY_S", raising=False)
    else:
        monkeypatch.setenv("CGAN_RETRY_DELAY_S", value)
    assert settings.retry_delay_s() == expected


@pytest.mark.parametrize("value", ["soon", "-1", "1e9", "nan"])
def test_bad_retry_delay(monkeypatch, value):
    monkeypatch.setenv("CGAN_RETRY_DELAY_S", value)
    with pytest.raises(ConfigError, match="CGAN_RETRY_DELAY_S=.* must be a number of seconds in 0..3600"):
        settings.retry_delay_s()


def test_cpu_inference_tasks_default_to_the_cores_and_bad_values_are_refused(monkeypatch):
    import os

    monkeypatch.delenv("CGAN_CPU_INFER_TASKS", raising=False)
    assert settings.cpu_infer_tasks() == os.cpu_count()
    monkeypatch.setenv("CGAN_CPU_INFER_TASKS", "6")
    assert settings.cpu_infer_tasks() == 6
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("CGAN_CPU_INFER_TASKS", bad)
        with pytest.raises(ConfigError, match="CGAN_CPU_INFER_TASKS"):
            settings.cpu_infer_tasks()


def test_bad_devices_and_gate_thresholds_are_config_errors(monkeypatch):
    monkeypatch.setenv("CGAN_DEVICES", "0,one")
    with pytest.raises(ConfigError, match=r"CGAN_DEVICES='0,one' must be comma-separated device ids .* such as 0,1"):
        settings.devices()
    monkeypatch.setenv("CGAN_DEVICES", "0, 2")
    assert settings.devices() == [0, 2]
    monkeypatch.setenv("CGAN_GATE_MIN_DIVERSITY", "1.5")
    with pytest.raises(ConfigError, match=r"CGAN_GATE_MIN_DIVERSITY='1.5' must be a number in 0..1"):
        settings.gate_thresholds()
