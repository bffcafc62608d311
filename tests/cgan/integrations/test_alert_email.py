"""The alert e-mail (cgan.integrations.alerts.send_email, what FailureAlert and late_run_alert send) delivered to a
real local SMTP server: run, task, reason and log link in it, never a credential."""

from __future__ import annotations

from cgan.integrations import alerts
from tests.cgan.integrations.test_alerts import publish_failure_alert
from tests.smtp_receiver import smtp_receiver


def test_failure_alert_email_arrives_with_run_task_reason_and_log_link_and_no_credential(monkeypatch):
    monkeypatch.setenv("CGAN_TEST_SMTP_PASSWORD", "hunter2-smtp-secret")
    alert = publish_failure_alert(
        "PublishError: s3://ops:hunter2-smtp-secret@minio:9000/cgan refused (hunter2-smtp-secret)")
    with smtp_receiver() as (host, port, received):
        alerts.send_email(alert, host=host, port=port, sender="airflow@example.test",
                          to=["ops@example.test", "oncall@example.test"])
    assert len(received) == 1
    msg = received[0]
    assert msg["Subject"] == "[cgan] cgan_generation run scheduled__2026-11-30T02:00:00+00:00 failed at publish"
    assert msg["X-Envelope-To"] == "ops@example.test, oncall@example.test"
    body = msg.get_payload(decode=True).decode()
    assert "reason: PublishError: s3://***@minio:9000/cgan refused (***)" in body
    assert "log: http://127.0.0.1:8080/dags/cgan_generation/runs/scheduled__2026-11-30T02:00:00+00:00/tasks/publish" \
        in body
    assert "hunter2" not in msg.as_string()
