"""Failure alerts of the DAG's runs: one message (run, failed task, reason, log link) to a webhook
and/or e-mail. No Airflow import here: operators/notify.py is the Airflow notifier that calls it.

Settings (cgan.settings): CGAN_ALERT_WEBHOOK_URL (JSON POST), CGAN_ALERT_EMAIL_TO (comma-separated),
CGAN_ALERT_SMTP_HOST / CGAN_ALERT_SMTP_PORT (default 25) / CGAN_ALERT_EMAIL_FROM. A message never
carries a credential: user:password@ in URLs and the values of secret-looking environment
variables (…SECRET…, …PASSWORD…, …TOKEN…, …_KEY) are replaced by ***.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$|^AIRFLOW_CONN_", re.I)
URL_USERINFO = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
MAX_REASON = 2000


@dataclass(frozen=True)
class Alert:
    dag_id: str
    run_id: str
    task_id: str  # the failed task; empty for a run that is late (no task failed)
    reason: str
    log_url: str

    @property
    def subject(self) -> str:
        if not self.task_id:
            return f"[cgan] {self.dag_id} run {self.run_id} is late: not finished by its deadline"
        return f"[cgan] {self.dag_id} run {self.run_id} failed at {self.task_id}"

    def text(self) -> str:
        return f"{self.subject}\n\nreason: {self.reason}\nlog: {self.log_url}\n"


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    """text without credentials: URL userinfo and the values of secret-looking variables."""
    env = os.environ if environ is None else environ
    text = URL_USERINFO.sub("***@", text)
    for name, value in env.items():
        if value and len(value) >= 4 and SECRET_NAME.search(name):
            text = text.replace(value, "***")
    return text


def make_alert(*, dag_id: str, run_id: str, task_id: str, reason: str, log_url: str) -> Alert:
    return Alert(dag_id, run_id, task_id, redact(reason)[:MAX_REASON], redact(log_url))


def send_webhook(url: str, alert: Alert, timeout: float = 10.0) -> None:
    body = json.dumps(dict(asdict(alert), subject=alert.subject, text=alert.text())).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the deployment's own URL
        if resp.status >= 300:
            raise OSError(f"webhook answered HTTP {resp.status}")


def send_email(alert: Alert, *, host: str, port: int, sender: str, to: list[str], timeout: float = 10.0) -> None:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = alert.subject, sender, ", ".join(to)
    msg.set_content(alert.text())
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        smtp.send_message(msg)
