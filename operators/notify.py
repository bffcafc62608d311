"""FailureAlert: an Airflow notifier that sends a failed task's alert (cgan.integrations.alerts) to the
webhook and/or e-mail of the settings (CGAN_ALERT_*). A delivery that fails (any exception, a
malformed URL included) is logged redacted, never raised, and the other channel is still tried:
an alert must not change the task's outcome."""

from __future__ import annotations

import logging
from urllib.parse import quote

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


class FailureAlert(BaseNotifier):
    """on_failure_callback of the DAG's tasks: names the run, the failed task, the reason, the log link."""

    def notify(self, context) -> None:
        from cgan import settings
        from cgan.integrations import alerts

        try:
            targets = settings.alert_targets()
        except Exception as exc:  # noqa: BLE001 - a bad alert setting must not change the task's outcome
            log.warning("failure alert not sent: %s", alerts.redact(str(exc)))
            return
        if not targets["webhook"] and not targets["email_to"]:
            return
        ti = context["ti"]
        alert = alerts.make_alert(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                                  reason=str(context.get("exception") or "unknown (see the log)"),
                                  log_url=getattr(ti, "log_url", "") or "")
        if targets["webhook"]:
            try:
                alerts.send_webhook(targets["webhook"], alert)
            except Exception as exc:  # noqa: BLE001 - any failure of one channel: log it, send the other
                log.warning("failure alert to the webhook not delivered: %s", alerts.redact(str(exc)))
        if targets["email_to"]:
            try:
                alerts.send_email(alert, host=targets["smtp_host"], port=targets["smtp_port"],
                                  sender=targets["email_from"], to=targets["email_to"])
            except Exception as exc:  # noqa: BLE001 - any failure of one channel: log it, send the other
                log.warning("failure alert e-mail not delivered: %s", alerts.redact(str(exc)))


def _ui_base_url() -> str:
    """The Airflow UI's base URL ([api] base_url), as in a task's log_url; empty: relative links."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


async def late_run_alert(context: dict | None = None, late_after_minutes: float | None = None, **_kwargs) -> None:
    """The DAG's Deadline Alert callback (an AsyncCallback: the scheduler queues it when the
    deadline passes and the triggerer runs it): the run has not finished `late_after_minutes`
    after it was queued. `context` is what the scheduler hands deadline callbacks:
    {"dag_run": {dag_id, dag_run_id, state, ...}, "deadline": {id, deadline_time}}."""
    import asyncio

    from cgan import settings
    from cgan.integrations import alerts

    targets = settings.alert_targets()
    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id = str(run.get("dag_id") or "cgan_generation")
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "?")
    after = f"{late_after_minutes:g} min" if late_after_minutes is not None else "CGAN_LATE_AFTER_MINUTES"
    alert = alerts.make_alert(
        dag_id=dag_id, run_id=run_id, task_id="",  # no task failed: the subject says the run is late
        reason=f"the run has not finished by its deadline {deadline.get('deadline_time', '?')} "
               f"({after} after it was queued); state {run.get('state', '?')}",
        log_url=f"{_ui_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}")
    if targets["webhook"]:
        try:
            await asyncio.to_thread(alerts.send_webhook, targets["webhook"], alert)
        except Exception as exc:  # noqa: BLE001 - any failure of one channel: log it, send the other
            log.warning("late-run alert to the webhook not delivered: %s", alerts.redact(str(exc)))
    if targets["email_to"]:
        try:
            await asyncio.to_thread(alerts.send_email, alert, host=targets["smtp_host"], port=targets["smtp_port"],
                                    sender=targets["email_from"], to=targets["email_to"])
        except Exception as exc:  # noqa: BLE001 - any failure of one channel: log it, send the other
            log.warning("late-run alert e-mail not delivered: %s", alerts.redact(str(exc)))
