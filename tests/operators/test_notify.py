"""FailureAlert, the DAG's on_failure_callback: one channel failing in any way (a malformed
webhook URL included) is logged without its credential and the other channel is still sent."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from tests.smtp_receiver import smtp_receiver

TOKEN = "webhook-token-7f3a9c"


def test_a_malformed_webhook_url_is_logged_redacted_and_the_email_still_goes(monkeypatch, caplog, capsys):
    """Before: the ValueError urllib raises for a URL without a scheme (carrying the URL and its
    token) escaped the notifier (it caught OSError only): the token went to the task log and the
    e-mail alert was skipped."""
    from operators.notify import FailureAlert

    with smtp_receiver() as (host, port, received):
        monkeypatch.setenv("CGAN_ALERT_WEBHOOK_URL", f"hooks.example.test/services/T0/B0/{TOKEN}")  # no scheme
        monkeypatch.setenv("CGAN_ALERT_EMAIL_TO", "oncall@example.test")
        monkeypatch.setenv("CGAN_ALERT_SMTP_HOST", host)
        monkeypatch.setenv("CGAN_ALERT_SMTP_PORT", str(port))
        ti = SimpleNamespace(dag_id="cgan_generation", run_id="manual-1\n", task_id="publish", log_url="")
        with caplog.at_level(logging.WARNING):
            FailureAlert().notify({"ti": ti, "exception": RuntimeError("publish failed")})
    assert len(received) == 1 and received[0]["Subject"] == "[cgan] cgan_generation run manual-1 failed at publish"
    logged = caplog.text + capsys.readouterr().out  # Airflow's structlog writes to stdout
    assert "failure alert to the webhook not delivered" in logged, logged
    assert TOKEN not in logged and TOKEN not in received[0].as_string()


def test_a_bad_alert_setting_does_not_raise(monkeypatch, caplog, capsys):
    from operators.notify import FailureAlert

    monkeypatch.setenv("CGAN_ALERT_EMAIL_TO", "oncall@example.test")
    monkeypatch.setenv("CGAN_ALERT_SMTP_PORT", "not-a-port")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", log_url="")
    with caplog.at_level(logging.WARNING):
        FailureAlert().notify({"ti": ti, "exception": RuntimeError("x")})
    assert "CGAN_ALERT_SMTP_PORT" in caplog.text + capsys.readouterr().out
