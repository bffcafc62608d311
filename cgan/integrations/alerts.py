"""Failure alerts of the DAG's runs: one message (run, failed task, reason, log link) to a webhook
and/or e-mail. No Airflow import here: operators/notify.py is the Airflow notifier that calls it.

Settings (cgan.settings): CGAN_ALERT_WEBHOOK_URL (JSON POST), CGAN_ALERT_EMAIL_TO (comma-separated),
CGAN_ALERT_SMTP_HOST / CGAN_ALERT_SMTP_PORT (default 25) / CGAN_ALERT_EMAIL_FROM. A message never
carries a credential: URL user info and every credential the environment holds (secret_values:
secret-looking variables, the password and secret fields inside Airflow connections, the token
path of the webhook URL) are replaced by ***.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$|^AIRFLOW_CONN_|WEBHOOK_URL|BROKER_URL|RESULT_BACKEND|"
                         r"SQL_ALCHEMY_CONN", re.I)
URL_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")  # user:password@, :password@ (redis), token@
SECRET_FIELD = re.compile(r"secret|password|token|key|credential", re.I)
MIN_SECRET = 4  # shorter values are not searched for (they would mask ordinary text)
MAX_REASON = 2000


def secret_values(environ: dict[str, str]) -> set[str]:
    """Every credential the environment holds, in the forms a message can carry it: the values of
    secret-looking variables; inside an Airflow connection (AIRFLOW_CONN_*: JSON or URI) its
    password and every secret-looking field of its extra; the password of a URL's user info; the
    path and query of a webhook URL (e.g. Slack's /services/T…/B…/<token>)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    found: set[str] = set()

    def fields(value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str) and SECRET_FIELD.search(str(k)):
                    found.add(str(v))
                fields(v)
        elif isinstance(value, list):
            for v in value:
                fields(v)

    for name, value in environ.items():
        if not value or not SECRET_NAME.search(name):
            continue
        found.add(value)
        try:
            fields(json.loads(value))
        except ValueError:
            pass
        if "://" in value:
            try:
                parts = urlsplit(value.strip())
            except ValueError:
                continue
            if parts.password:
                found.update({parts.password, unquote(parts.password)})
            if parts.username and not parts.password and "WEBHOOK" in name.upper():
                found.add(parts.username)
            found.update(v for k, v in parse_qsl(parts.query) if SECRET_FIELD.search(k))
            if "WEBHOOK" in name.upper():
                found.update(p for p in (parts.path, parts.query, parts.path.rsplit("/", 1)[-1]) if p)
    return {v for v in found if len(v) >= MIN_SECRET}


@dataclass(frozen=True)
class Alert:
    dag_id: str
    run_id: str
    task_id: str  # the failed task; empty for a run that is late (no task failed)
    reason: str
    log_url: str

    @property
    def subject(self) -> str:
        """One line (a run id may end in a newline; an e-mail header may not hold one)."""
        run, task = _one_line(self.run_id), _one_line(self.task_id)
        if not task:
            return f"[cgan] {_one_line(self.dag_id)} run {run} is late: not finished by its deadline"
        return f"[cgan] {_one_line(self.dag_id)} run {run} failed at {task}"

    def text(self) -> str:
        return f"{self.subject}\n\nreason: {self.reason}\nlog: {self.log_url}\n"


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    """text without credentials: URL user info and every value of secret_values (longest first)."""
    env = os.environ if environ is None else environ
    for value in sorted(secret_values(dict(env)), key=len, reverse=True):
        text = text.replace(value, "***")
    return URL_USERINFO.sub("***@", text)


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


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
