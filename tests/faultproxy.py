"""A fault proxy in front of the real S3 server: single failed requests with the server up.

    with FaultProxy(local_s3["endpoint"]) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint, ...)
        proxy.add("HEAD", r"/cgan/runs/r/manifest\\.json$", "404")   # one bare 404, then pass
        proxy.add("PUT", r"/manifest\\.json$", "drop")               # applied, its answer lost
        proxy.add("GET", r"/runs/", "skew", times=10)                 # 403 RequestTimeTooSkewed

Each request is forwarded as it came (headers, body, so the SigV4 signature made for the proxy's
host:port still verifies upstream) unless a rule matches its method and path (the query string
included, `?` and all). A rule lets `after` matching requests pass (default none), then fires
`times` times (default once), then stops. Actions:

- `404`: a bare 404 with an empty body (a gateway or a node restarting), not forwarded;
- `500`: a bare 500, not forwarded;
- `drop`: forwarded and applied by the server, then the connection is closed without an answer
  (a response lost on the way back: botocore retries the request);
- `skew`: a 403 RequestTimeTooSkewed, not forwarded: the answer S3 gives a request signed more than
  15 minutes off its clock, with AWS's error body (`<Error><Code>RequestTimeTooSkewed</Code>
  <Message>…</Message><RequestTime>` the request's X-Amz-Date `</RequestTime><ServerTime>`
  ISO 8601 `</ServerTime><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>…`). A HEAD
  gets a bare 403, as S3 and SeaweedFS send it (a HEAD answer has no body to name the code).
  ServerTime and the answer's Date are the proxy's clock moved by `date_offset_s`: give the proxy
  e.g. date_offset_s=1200 for a store whose clock is 20 minutes ahead of the worker's.

`date_offset_s` moves the Date header of every answer (forwarded or `skew`): the store's clock
running ahead of (or behind) the worker's, e.g. to make what was just written look days old to a sweep.
`proxy.seen` lists (method, path, action or "pass") of every request, for assertions.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ACTIONS = ("404", "500", "drop", "skew")


class FaultProxy:
    def __init__(self, upstream: str, date_offset_s: float = 0.0):
        parts = urlsplit(upstream)
        self.date_offset_s = date_offset_s
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[dict] = []
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, method: str, path_re: str, action: str, times: int = 1, after: int = 0) -> dict:
        """Fail the matching requests `times` times, once `after` of them have passed."""
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: one of {ACTIONS}")
        rule = {"method": method, "path": re.compile(path_re), "action": action, "left": times, "fired": 0,
                "pass": after}
        with self._lock:
            self.rules.append(rule)
        return rule

    def _match(self, method: str, path: str) -> str | None:
        with self._lock:
            for rule in self.rules:
                if rule["left"] > 0 and rule["method"] == method and rule["path"].search(path):
                    if rule["pass"] > 0:
                        rule["pass"] -= 1
                        continue
                    rule["left"] -= 1
                    rule["fired"] += 1
                    return rule["action"]
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy._match(self.command, self.path)
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, action or "pass"))
                if action in ("404", "500"):
                    self.send_response(int(action))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action == "skew":
                    self._skewed()
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                if action == "drop":  # the server applied it; its answer never arrives
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response_only(answer.status, answer.reason)  # the server's own Date, not ours
                for k, v in answer.getheaders():
                    if k.lower() == "date" and proxy.date_offset_s:
                        v = formatdate(parsedate_to_datetime(v).timestamp() + proxy.date_offset_s, usegmt=True)
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD's answer has no body but the object's length: the server's own header
                length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _skewed(self):
                """S3's answer to a request signed too far off its clock (AWS's wording and fields)."""
                now = time.time() + proxy.date_offset_s
                query = parse_qs(urlsplit(self.path).query)
                signed = self.headers.get("X-Amz-Date") or query.get("X-Amz-Date", [""])[0]  # or presigned
                body = b""
                if self.command != "HEAD":
                    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>RequestTimeTooSkewed</Code>'
                            "<Message>The difference between the request time and the current time is too large."
                            f"</Message><RequestTime>{signed}</RequestTime><ServerTime>"
                            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}</ServerTime>"
                            "<MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>"
                            "<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>").encode()
                self.send_response_only(403, "Forbidden")
                self.send_header("Date", formatdate(now, usegmt=True))
                if body:
                    self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
