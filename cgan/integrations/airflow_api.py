"""Airflow's REST API, for `cgan register-checkpoint`: a JWT from POST /auth/token, the asset's
id from GET /api/v2/assets, an asset event from POST /api/v2/assets/events. Standard library only
(urllib), no Airflow import: the command runs where Airflow is not installed.

Every error names the URL, the HTTP status and the fix. The password and the token are never
printed, logged or put in an error message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cgan.errors import CganError

USER_VARS = "CGAN_AIRFLOW_USER and CGAN_AIRFLOW_PASSWORD"


class AirflowApiError(CganError):
    """Airflow's REST API cannot be reached, refused the credentials, or has no such asset."""


class AirflowApi:
    def __init__(self, url: str, user: str, password: str, timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or "@" in parsed.netloc:
            netloc = parsed.netloc
            shown = url.replace(netloc, "***@" + netloc.rsplit("@", 1)[1]) if "@" in netloc else url
            raise AirflowApiError(f"Airflow API URL {shown!r} must be http(s)://host[:port] with no user:password in "
                                  "it: pass --api-url or set CGAN_AIRFLOW_API_URL (the credentials go in "
                                  f"{USER_VARS})")
        if not user or not password:
            raise AirflowApiError(f"no Airflow credentials: set {USER_VARS} (a user allowed to create asset "
                                  f"events on {url})")
        self.url = url.rstrip("/")
        self._user, self._password, self.timeout = user, password, timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> Any:
        url = self.url + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked above
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(self._explain(method, url, exc.code, _detail(exc))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AirflowApiError(f"{method} {url}: cannot reach Airflow ({reason}): is its api-server running "
                                  "there? Pass --api-url or set CGAN_AIRFLOW_API_URL") from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise AirflowApiError(f"{method} {url}: the answer is not JSON ({raw[:100]!r}): is --api-url / "
                                  "CGAN_AIRFLOW_API_URL the Airflow api-server's address?") from None

    def _explain(self, method: str, url: str, status: int, detail: str) -> str:
        head = f"{method} {url}: HTTP {status}"
        if status == 401:
            return (f"{head}: Airflow refused the user {self._user!r} or its password: check {USER_VARS}"
                    + (f" ({detail})" if detail else ""))
        if status == 403:
            return f"{head}: the user {self._user!r} may not do this: give it a role that may create asset events"
        if status == 404:
            return (f"{head}: not found ({detail or 'no such endpoint'}): is --api-url / CGAN_AIRFLOW_API_URL an "
                    "Airflow 3 api-server?")
        return f"{head}: {detail or 'no detail'}"

    def token(self) -> str:
        """A JWT from POST /auth/token (simple auth manager and FAB alike); kept, never shown."""
        if self._token is None:
            answer = self._request("POST", "/auth/token", {"username": self._user, "password": self._password},
                                   auth=False)
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not token:
                raise AirflowApiError(f"POST {self.url}/auth/token: HTTP 2xx but no access_token in the answer: "
                                      "is this an Airflow 3 api-server?")
            self._token = token
        return self._token

    def asset_id(self, name: str) -> int:
        """The id of the asset named `name` (GET /api/v2/assets?name_pattern=...)."""
        query = urllib.parse.urlencode({"name_pattern": name, "limit": 100})
        answer = self._request("GET", f"/api/v2/assets?{query}")
        for asset in answer.get("assets", []):
            if asset.get("name") == name:
                return int(asset["id"])
        raise AirflowApiError(f"GET {self.url}/api/v2/assets?{query}: HTTP 200 but no asset named {name!r}: "
                              "Airflow has not parsed the cgan_generation DAG (with its checkpoint trigger) "
                              "yet; check that the DAG is deployed and listed without import errors, then "
                              "run the command again")

    def create_asset_event(self, asset_id: int, extra: dict) -> dict:
        """POST /api/v2/assets/events; the event as Airflow recorded it."""
        return self._request("POST", "/api/v2/assets/events", {"asset_id": asset_id, "extra": extra})


def _detail(exc: urllib.error.HTTPError) -> str:
    """The `detail` of Airflow's error answer (never a credential: Airflow's own text), shortened."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return (detail if isinstance(detail, str) else json.dumps(detail) if detail else "")[:300]


def register_checkpoint(api: AirflowApi, asset: str, checkpoint: str, extra: dict | None = None) -> dict:
    """Post an event of the checkpoint asset naming `checkpoint`; the recorded event
    (its id, timestamp and extra) and the asset's id."""
    asset_id = api.asset_id(asset)
    event = api.create_asset_event(asset_id, dict(extra or {}, checkpoint=checkpoint))
    return {"asset": asset, "asset_id": asset_id, "event_id": event.get("id"),
            "timestamp": event.get("timestamp"), "extra": event.get("extra"), "api_url": api.url}
