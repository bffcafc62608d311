"""Failure alerts (cgan.integrations.alerts) delivered to a real local HTTP receiver, with no credential in them."""

import pytest

from cgan.integrations import alerts
from tests.alert_receiver import webhook_receiver

RUN_ID = "scheduled__2026-11-30T02:00:00+00:00"


def publish_failure_alert(reason: str) -> alerts.Alert:
    """The alert of a nightly run whose publish task failed with `reason`."""
    return alerts.make_alert(dag_id="cgan_generation", run_id=RUN_ID, task_id="publish", reason=reason,
                             log_url=f"http://127.0.0.1:8080/dags/cgan_generation/runs/{RUN_ID}/tasks/publish")


def test_webhook_alert_names_run_task_reason_and_log_and_no_credential(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-xyz")
    alert = publish_failure_alert(
        "PublishError: s3://cgan/x refused, key s3cr3t-value-xyz, endpoint http://bob:pw123@minio:9000/")
    with webhook_receiver() as (url, received):
        alerts.send_webhook(url, alert)
    assert len(received) == 1
    got = received[0]
    assert got["run_id"] == "scheduled__2026-11-30T02:00:00+00:00" and got["task_id"] == "publish"
    assert got["subject"] == "[cgan] cgan_generation run scheduled__2026-11-30T02:00:00+00:00 failed at publish"
    assert "PublishError" in got["reason"] and got["log_url"].endswith("/tasks/publish")
    text = str(got)
    assert "s3cr3t-value-xyz" not in text and "pw123" not in text and "***@minio" in text


def test_an_unreachable_webhook_is_an_oserror():
    alert = alerts.make_alert(dag_id="d", run_id="r", task_id="t", reason="x", log_url="")
    with pytest.raises(OSError):
        alerts.send_webhook("http://127.0.0.1:9/none", alert, timeout=2)


def test_late_run_alert_names_the_run_and_its_deadline(monkeypatch):
    """The Deadline Alert's callback, called with the context the scheduler hands it."""
    import asyncio

    from operators.notify import late_run_alert

    with webhook_receiver() as (url, received):
        monkeypatch.setenv("CGAN_ALERT_WEBHOOK_URL", url)
        asyncio.run(late_run_alert(context={
            "dag_run": {"dag_id": "cgan_generation", "dag_run_id": "scheduled__2026-11-30T02:00:00+00:00",
                        "state": "running"},
            "deadline": {"id": "x", "deadline_time": "2026-11-30T06:00:00+00:00"}}, late_after_minutes=240.0))
    assert len(received) == 1 and received[0]["run_id"] == "scheduled__2026-11-30T02:00:00+00:00"
    assert received[0]["subject"] == ("[cgan] cgan_generation run scheduled__2026-11-30T02:00:00+00:00 is late: "
                                      "not finished by its deadline") and received[0]["task_id"] == ""
    reason = received[0]["reason"]
    assert "not finished by its deadline 2026-11-30T06:00:00+00:00 (240 min after it was queued)" in reason
    assert received[0]["log_url"].endswith("/dags/cgan_generation/runs/scheduled__2026-11-30T02%3A00%3A00%2B00%3A00")


# The deployment's real secret layout (docker-compose.yaml, docker/compose.npu-host.yaml)
COMPOSE_ENV = {
    "AIRFLOW_CONN_CGAN_S3": '{"conn_type": "aws", "login": "cgan-access", "password": "s3-secret-in-conn-json", '
                            '"extra": {"endpoint_url": "http://minio:9000", "region_name": "us-east-1", '
                            '"aws_session_token": "session-token-xyz", "config_kwargs": {"s3": {"addressing_style": '
                            '"path"}}}}',
    "AIRFLOW__CELERY__BROKER_URL": "redis://:redis-pass-123@redis:6379/0",
    "AIRFLOW__CELERY__RESULT_BACKEND": "redis://:redis-pass-123@redis:6379/0",  # on Redis, as compose has it
    # held by the scheduler and the DAG processor (which run DAG-level callbacks), not by workers
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg://airflow:pg-pass-456@postgres/airflow",
    "CGAN_ALERT_WEBHOOK_URL": "https://hooks.example.test/services/T000/B000/webhook-token-789",
}
CREDENTIALS = ["s3-secret-in-conn-json", "session-token-xyz", "redis-pass-123", "pg-pass-456",
               "webhook-token-789", "/services/T000/B000/webhook-token-789"]


@pytest.mark.parametrize("leak", [
    "botocore: SignatureDoesNotMatch for secret s3-secret-in-conn-json",
    "token session-token-xyz expired",
    "Error 111 connecting to redis://:redis-pass-123@redis:6379/0",  # URL user info with an empty user
    "Error connecting to redis: password redis-pass-123 refused",
    "psycopg: password authentication failed (pg-pass-456)",
    "<urlopen error https://hooks.example.test/services/T000/B000/webhook-token-789 unreachable>",
    "POST /services/T000/B000/webhook-token-789 -> 404",
])
def test_no_credential_of_the_deployments_layout_reaches_an_alert(leak):
    """Before: the S3 secret inside the connection's JSON, redis://:password@ and the webhook's
    token path went out as they were."""
    text = alerts.redact(leak, COMPOSE_ENV)
    assert not [c for c in CREDENTIALS if c in text], text
    assert "***" in text


def test_a_run_id_ending_in_a_newline_still_gets_its_email_subject():
    alert = alerts.make_alert(dag_id="cgan_generation", run_id="manual-1\n", task_id="publish", reason="x",
                              log_url="")
    assert alert.subject == "[cgan] cgan_generation run manual-1 failed at publish"
    from email.message import EmailMessage

    EmailMessage()["Subject"] = alert.subject  # a header with a newline raises here
