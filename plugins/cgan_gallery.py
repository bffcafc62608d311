"""The CGAN gallery: published runs in the Airflow UI (Browse -> CGAN gallery).

A FastAPI app mounted by the API server at /cgan-gallery, and a nav entry whose `url_route`
makes the UI show it in an iframe. Pages are plain server-rendered HTML (no JavaScript, no
external CSS, so it works without network access):

    /cgan-gallery/                         published runs (table) + trend of grids/s and label accuracy
    /cgan-gallery/runs/<name>              one run: grids, perf figures and latency plot, quality report
    /cgan-gallery/runs/<name>/img/<key>    a PNG of that run (only keys its manifest lists)

Authentication: Airflow does NOT authenticate mounted plugin apps, so every route here asks
Airflow's own `get_user` (airflow.api_fastapi.core_api.security) for the caller:
an `Authorization: Bearer <JWT>` header, else the UI's `_token` cookie, validated by the auth
manager (`get_user_from_token`: signature, expiry, audience, revoked tokens). No valid login:
401 (an HTML page with a sign-in link for browsers). Then the auth manager must allow the user
to read the runs of the `cgan_generation` DAG, else 403.

The S3 client comes from the Airflow connection CGAN_S3_CONN_ID (default `cgan_s3`) through the
amazon provider's S3Hook, created on first use and renewed every few minutes; the bucket is
CGAN_PUBLISH_BUCKET (default `cgan`). Nothing heavy is imported, and nothing is connected, at
import time: the scheduler and workers import this file too.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

URL_PREFIX = "/cgan-gallery"
URL_ROUTE = "cgan-gallery"
TITLE = "CGAN gallery"
DAG_ID = "cgan_generation"  # the gallery shows what this DAG publishes: reading it needs DAG run access
GRIDS_PER_PAGE = 48
CLIENT_TTL_S = 300.0

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 20px;color:#1f2937;background:#fff}
a{color:#0b5cad}h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.muted{color:#6b7280}.warn{color:#92400e;background:#fffbeb;border:1px solid #fcd34d;padding:6px 10px}
table{border-collapse:collapse;margin:4px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f9fafb;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.nw{white-space:nowrap}
code{font-size:12px;word-break:break-all}nav{margin-bottom:12px}
.grids{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}figcaption{font-size:12px;color:#6b7280;text-align:center}
img.grid{width:280px;height:280px;image-rendering:pixelated;border:1px solid #e5e7eb}
img.plot{max-width:100%;border:1px solid #e5e7eb}svg text{font:11px system-ui,sans-serif;fill:#374151}
.pager a,.pager span{margin-right:8px}
"""
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src 'self'; style-src 'sha256-{CSS_HASH}'; frame-ancestors 'self'; "
       "base-uri 'none'; form-action 'none'")


def _base_path() -> str:
    """The path of [api] base_url (e.g. /airflow behind a proxy), '' when served at the root."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)


@app.middleware("http")
async def security_headers(request: Request, call_next):
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- authentication and authorization (Airflow's own) ------------------------------------------

async def require_user(request: Request) -> Any:
    """The logged-in Airflow user allowed to read the DAG's runs; 401/403 otherwise."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException

    try:
        # Exactly what Airflow's API routes do: Bearer header first, else the `_token` cookie
        # (or the user the JWT refresh middleware already validated from that cookie).
        user = await get_user(request, None, await bearer_scheme(request))
    except HTTPException as exc:
        raise HTTPException(401, f"Not signed in to Airflow ({exc.detail})",
                            headers={"WWW-Authenticate": "Bearer"}) from None
    allowed = await run_in_threadpool(_can_read_runs, get_auth_manager(), user)
    if not allowed:
        raise HTTPException(403, f"User {user.get_name()!r} may not read the runs of the DAG {DAG_ID!r}")
    return user


def _can_read_runs(auth_manager, user) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return auth_manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                          details=DagDetails(id=DAG_ID), user=user)


def _login_url() -> str | None:
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=f"{_base_path()}/plugin/{URL_ROUTE}")
    except Exception:  # no auth manager: the page still says what is wrong
        return None


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException):
    headers = getattr(exc, "headers", None)
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
    body = f"<p>{e(exc.detail)}</p>"
    if exc.status_code == 401:
        login = _login_url()
        if login:
            body += f'<p><a href="{e(login)}" target="_top">Sign in to Airflow</a>, then open the gallery again.</p>'
    else:
        body += f'<p><a href="{e(_root(request))}/">Published runs</a></p>'
    return HTMLResponse(_page(request, f"{exc.status_code}: {TITLE}", body), status_code=exc.status_code,
                        headers=headers)


# -- the object store -------------------------------------------------------------------------

_clients: dict[str, tuple[float, Any]] = {}
_clients_lock = threading.Lock()


def s3_client():
    """boto3 S3 client of the Airflow connection CGAN_S3_CONN_ID, renewed every CLIENT_TTL_S."""
    from cgan.settings import s3_conn_id

    conn_id = s3_conn_id()
    now = time.monotonic()
    with _clients_lock:
        hit = _clients.get(conn_id)
        if hit and now - hit[0] < CLIENT_TTL_S:
            return hit[1]
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = S3Hook(aws_conn_id=conn_id).get_conn()
    with _clients_lock:
        _clients[conn_id] = (now, client)
    return client


def _bucket() -> str:
    """CGAN_PUBLISH_BUCKET (default `cgan`); a value that cannot work is a 503 that names it."""
    from fastapi import HTTPException

    from cgan.errors import CganError
    from cgan.settings import publish_bucket
    from cgan.storage.keys import check_bucket

    try:
        return check_bucket(publish_bucket())
    except (CganError, ValueError) as exc:
        raise HTTPException(503, f"CGAN_PUBLISH_BUCKET cannot be used: {exc}") from None


def _store_call(fn, *args, **kwargs):
    """Run a cgan.publishing.gallery function against the configured bucket; its errors become HTTP errors."""
    from fastapi import HTTPException

    from cgan.publishing.gallery import GalleryError, NotFound, StoreUnavailable
    from cgan.settings import s3_conn_id
    from cgan.storage import s3

    bucket = _bucket()
    try:
        client = s3_client()
    except Exception as exc:
        raise HTTPException(503, f"cannot use the Airflow connection {s3_conn_id()!r} ({type(exc).__name__}: "
                                 f"{exc}); define it (type aws, extra.endpoint_url for MinIO/SeaweedFS) "
                                 "or set CGAN_S3_CONN_ID") from None
    try:
        return fn(client, bucket, *args, **kwargs)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except StoreUnavailable as exc:
        raise HTTPException(502, f"{exc} (Airflow connection {s3_conn_id()!r}, endpoint {s3.endpoint(client)}, "
                                 f"bucket CGAN_PUBLISH_BUCKET={bucket!r})") from None
    except GalleryError as exc:
        raise HTTPException(502, str(exc)) from None


# -- pages ------------------------------------------------------------------------------------

def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _run_url(request: Request, name: str) -> str:
    return f"{_root(request)}/runs/{quote(name, safe='')}"


def _img_url(request: Request, name: str, rel: str) -> str:
    return f"{_run_url(request, name)}/img/{quote(rel, safe='/')}"


def _page(request: Request, title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f'<meta name="viewport" content="width=device-width"><style>{CSS}</style></head><body>'
            f'<nav><a href="{e(_root(request))}/">Published runs</a></nav>{body}</body></html>')


def _num(value: Any, fmt: str = "{:,.2f}") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and
                                                                          not math.isfinite(value)):
        return "&mdash;"
    return e(fmt.format(value))


def _pct(value: Any) -> str:
    return _num(value * 100 if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
                "{:.1f} %")


def _when(value: str | None) -> str:
    if not value:
        return "&mdash;"
    from datetime import datetime

    try:
        shown = datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        shown = value
    return f'<span title="{e(value)}">{e(shown)}</span>'


def _rows(pairs: list[tuple[str, str]]) -> str:
    """Table rows of (label, already-escaped HTML)."""
    return "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _gate_html(run) -> str:
    if run.status == "rejected":
        return f'<span class=warn title="{e("; ".join(run.gate_failures))}">rejected</span>'
    return "accepted"


@app.get("/", response_class=HTMLResponse)
def index(request: Request, kind: str = Query("all", pattern="^(all|nightly|manual)$"), user=Depends(require_user)):
    from cgan.layout.published import RUNS_PREFIX
    from cgan.publishing.gallery import list_runs, run_kind, trend

    listing = _store_call(list_runs)
    bucket = _bucket()
    body = [f"<h1>{e(TITLE)}</h1><p class=muted>Published runs of <code>s3://{e(bucket)}/{e(RUNS_PREFIX)}</code>, "
            f"newest first ({len(listing.runs)} shown). A run is published once its manifest is written.</p>"]
    runs = [r for r in listing.runs if kind in ("all", run_kind(r.run_id))]
    body.append("<p>Show: " + " | ".join(
        f"<b>{k}</b>" if k == kind else f'<a href="{e(_root(request))}/?kind={k}">{k}</a>'
        for k in ("all", "nightly", "manual")) + "</p>")
    if runs:
        body.append("<h2>Trend over time</h2><p class=muted>Filled points joined by a line: nightly (scheduled) "
                    "runs; hollow points: manual runs. x: the run's logical date.</p>")
        body.append(trend_svg(trend(runs)))
        body.append("<h2>Runs</h2><table><thead><tr><th>run id</th><th>logical date</th><th>target, backend</th>"
                    "<th>grids</th><th>grids/s</th><th>latency mean (ms)</th><th>label accuracy</th>"
                    "<th>parity max abs err</th><th>quality gate</th><th></th></tr></thead><tbody>")
        for run in runs:
            url = e(_run_url(request, run.name))
            body.append(
                f'<tr><td><a href="{url}">{e(run.run_id)}</a></td><td class=nw>{_when(run.logical_date)}</td>'
                f"<td>{e(run.target or '')}, {e(run.backend or '')}</td><td class=n>{_num(run.grids, '{:,}')}</td>"
                f"<td class=n>{_num(run.grids_per_s)}</td><td class=n>{_num(run.latency_ms_mean)}</td>"
                f"<td class=n>{_pct(run.label_accuracy)}</td><td class=n>{_num(run.parity_max_abs_err, '{:.2e}')}</td>"
                f"<td>{_gate_html(run)}</td>"
                f'<td class=nw><a href="{url}">open</a></td></tr>')
        body.append("</tbody></table>")
    else:
        body.append("<p>No published runs yet: trigger the <code>cgan_generation</code> DAG, or wait for the "
                    "nightly run.</p>")
    notes = []
    if listing.more_runs:
        notes.append(f"Only the newest {len(listing.runs)} runs are shown.")
    if listing.more_prefixes:
        notes.append(f"Only {listing.scanned} run prefixes were looked at.")
    if listing.unpublished:
        notes.append(f"{len(listing.unpublished)} prefix(es) without a manifest (not published, or being "
                     "published) are not listed.")
    for name, why in listing.unreadable[:20]:
        notes.append(f"{RUNS_PREFIX}{name}/ is not listed: {why}")
    body.extend(f"<p class=muted>{e(n)}</p>" for n in notes)
    return HTMLResponse(_page(request, TITLE, "".join(body)))


@app.get("/runs/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str, page: int = Query(1, ge=1, le=1_000_000), user=Depends(require_user)):
    from cgan.publishing.gallery import load_run

    run = _store_call(load_run, name)
    s = run.summary
    body = [f"<h1>Run {e(s.run_id)}</h1><p class=muted>logical date {_when(s.logical_date)}, published "
            f"{_when(s.published_at)}</p>"]
    body.extend(f'<p class=warn>{e(p)}</p>' for p in run.problems)
    if s.status == "rejected":
        body.append("<p class=warn>Rejected by the quality gate: published for inspection only; latest.json "
                    "does not name it. " + e("; ".join(s.gate_failures)) + "</p>")
    figures = [("grids", _num(s.grids, "{:,}")), ("target, backend", f"{e(s.target or '')}, {e(s.backend or '')}"),
               ("grids/s", _num(s.grids_per_s)), ("latency mean (ms)", _num(s.latency_ms_mean)),
               ("label accuracy", _pct(s.label_accuracy)), ("parity max abs err", _num(s.parity_max_abs_err, "{:.2e}")),
               ("objects", f"{_num(s.objects, '{:,}')} ({_num(run.total_bytes / 1e6, '{:,.1f}')} MB)")]
    body.append("<table><thead><tr>" + "".join(f"<th>{e(k)}</th>" for k, _ in figures) + "</tr></thead><tbody><tr>"
                + "".join(f"<td class=nw>{v}</td>" for _, v in figures) + "</tr></tbody></table>"
                f"<p class=muted>manifest <code>{e(s.manifest_key)}</code></p>")
    body.append(_grids_html(request, run, page))
    body.append(_perf_html(request, run))
    body.append(_quality_html(run.quality))
    body.append(_details_html(run.manifest))
    return HTMLResponse(_page(request, f"{s.run_id}: {TITLE}", "".join(body)))


@app.get("/runs/{name}/img/{rel:path}")
def image(name: str, rel: str, user=Depends(require_user)):
    from cgan.publishing.gallery import open_png

    png = _store_call(open_png, name, rel)
    headers = {"Content-Length": str(png.size), "Cache-Control": "private, max-age=300"}
    if png.etag:
        headers["ETag"] = png.etag
    return StreamingResponse(png.chunks(), media_type="image/png", headers=headers)


def _perf_html(request: Request, run) -> str:
    perf = run.perf
    out = ["<h2>Performance</h2>"]
    if not perf:
        out.append("<p class=muted>No perf.json in this run.</p>")
    else:
        lat = perf.get("latency_ms") if isinstance(perf.get("latency_ms"), dict) else {}
        devices = perf.get("devices")
        out.append("<table>" + _rows([
            ("backend", e(perf.get("backend", ""))),
            ("devices", e(", ".join(map(str, devices)) if isinstance(devices, list) else devices or "")),
            ("batch / threads", f"{_num(perf.get('batch'), '{}')} / {_num(perf.get('threads'), '{}')}"),
            ("shards / calls / grids", f"{_num(perf.get('shards'), '{}')} / {_num(perf.get('calls'), '{:,}')} / "
                                       f"{_num(perf.get('grids'), '{:,}')}"),
            ("latency per call (ms)", f"mean {_num(lat.get('mean'))}, median {_num(lat.get('median'))}, "
                                      f"p99 {_num(lat.get('p99'))}, min {_num(lat.get('min'))}, "
                                       f"max {_num(lat.get('max'))}"),
            ("grids/s", _num(perf.get("grids_per_s"))), ("images/s", _num(perf.get("images_per_s"), "{:,.1f}")),
        ]) + "</table>")
        notes = perf.get("notes")
        if isinstance(notes, list) and notes:
            out.append("<ul class=muted>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if run.has_latency_plot:
        from cgan.layout.published import LATENCY_PLOT_KEY

        out.append(f'<img class=plot src="{e(_img_url(request, run.summary.name, LATENCY_PLOT_KEY))}" '
                   'alt="latency per call">')
    return "".join(out)


def _quality_html(quality: dict | None) -> str:
    if not quality:
        return "<h2>Quality</h2><p class=muted>No quality.json in this run.</p>"
    out = ["<h2>Quality</h2><table>" + _rows([
        ("label accuracy", _pct(quality.get("label_accuracy"))),
        ("parity max abs err (vs PyTorch fp32)", _num(quality.get("parity_max_abs_err"), "{:.2e}")),
        ("classifier hold-out accuracy", _pct(quality.get("classifier_holdout_accuracy"))),
        ("digits judged / parity grids checked", f"{_num(quality.get('digits_judged'), '{:,}')} / "
                                                 f"{_num(quality.get('parity_grids_checked'), '{:,}')}"),
    ]) + "</table>"]
    per_class = quality.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        out.append("<h2>Label accuracy per digit</h2><table><thead><tr><th>digit</th><th>accuracy</th><th></th>"
                   "</tr></thead><tbody>")
        for digit, acc in sorted(per_class.items(), key=lambda kv: str(kv[0])):
            width = max(0.0, min(1.0, acc)) * 200 if isinstance(acc, (int, float)) and not isinstance(acc, bool) \
                and math.isfinite(acc) else 0
            out.append(f"<tr><td>{e(digit)}</td><td class=n>{_pct(acc)}</td><td><svg width=200 height=12 "
                       f'role=img><rect width=200 height=12 fill="#e5e7eb"/><rect width="{width:.1f}" height=12 '
                       'fill="#2563eb"/></svg></td></tr>')
        out.append("</tbody></table>")
    return "".join(out)


def _grids_html(request: Request, run, page: int) -> str:
    grids = run.grids
    pages = max(1, math.ceil(len(grids) / GRIDS_PER_PAGE))
    page = min(page, pages)
    shown = grids[(page - 1) * GRIDS_PER_PAGE: page * GRIDS_PER_PAGE]
    out = [f"<h2>Grids</h2><p class=muted>{len(grids):,} grid(s); row = one noise vector, column = digit 0..9.</p>"]
    pager = ""
    if pages > 1:
        base = _run_url(request, run.summary.name)
        links = [f'<a href="{e(base)}?page={p}">{label}</a>' if p != page else f"<span>{label}</span>"
                 for p, label in ((1, "first"), (max(1, page - 1), "previous"), (min(pages, page + 1), "next"),
                                  (pages, "last"))]
        pager = f"<p class=pager>page {page} of {pages}: " + " ".join(links) + "</p>"
    out.append(pager + "<div class=grids>")
    for rel in shown:
        url = e(_img_url(request, run.summary.name, rel))
        label = e(rel.rsplit("/", 1)[-1].removesuffix(".png"))
        out.append(f'<figure><a href="{url}"><img class=grid src="{url}" alt="{label}" width=280 height=280 '
                   f'loading=lazy></a><figcaption>{label}</figcaption></figure>')
    out.append("</div>" + pager)
    return "".join(out)


def _details_html(manifest: dict) -> str:
    out = []
    for section, title in (("params", "Parameters"), ("model", "Model"), ("tools", "Tools")):
        value = manifest.get(section)
        if isinstance(value, dict) and value:
            out.append(f"<h2>{e(title)}</h2><table>" + _rows(
                [(str(k), f"<code>{e(v if isinstance(v, str) else json.dumps(v))}</code>") for k, v in value.items()]
            ) + "</table>")
    return "".join(out)


def trend_svg(points, width: int = 960, height: int = 190) -> str:
    """Inline SVG: grids/s and label accuracy per run on a time axis (oldest left), two panels side
    by side; nightly runs are filled points joined by a line, manual runs hollow points."""
    n = len(points)
    times = [p.when.timestamp() if p.when else None for p in points]
    known_t = [t for t in times if t is not None]
    t_lo, t_hi = (min(known_t), max(known_t)) if known_t else (0.0, 0.0)

    def frac(i: int) -> float:  # position on the time axis; runs without a time keep their order
        t = times[i]
        if t is None or t_hi <= t_lo:
            return 0.5 if n == 1 else i / (n - 1)
        return (t - t_lo) / (t_hi - t_lo)

    gap, left, right, top, bottom = 40, 58, 10, 20, 26
    panel_w = (width - gap) / 2
    plot_w, plot_h = panel_w - left - right, height - top - bottom
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="grids per second and label accuracy over the runs">']
    panels = (("grids/s (per device)", [p.grids_per_s for p in points], "{:,.1f}", "#2563eb", False),
              ("label accuracy", [p.label_accuracy for p in points], "{:.1%}", "#059669", True))
    for k, (label, values, fmt, color, unit) in enumerate(panels):
        x0 = k * (panel_w + gap) + left
        xs = [x0 + frac(i) * plot_w for i in range(n)]
        known = [v for v in values if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        if unit:
            pad = max(0.02, (hi - lo) * 0.15)
            lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
        else:
            lo, hi = 0.0, (hi * 1.15 if hi > 0 else 1.0)
        if hi <= lo:
            hi = lo + 1.0

        def ypos(v: float, lo: float = lo, hi: float = hi) -> float:  # this panel's scale
            return top + plot_h - (v - lo) / (hi - lo) * plot_h

        parts.append(f'<text x="{x0}" y="{top - 8}" font-weight="600">{e(label)}</text>')
        for t in range(3):
            v = lo + (hi - lo) * t / 2
            parts.append(f'<line x1="{x0}" x2="{x0 + plot_w:.1f}" y1="{ypos(v):.1f}" y2="{ypos(v):.1f}" '
                         f'stroke="#e5e7eb"/><text x="{x0 - 6}" y="{ypos(v) + 4:.1f}" text-anchor="end">'
                         f"{e(fmt.format(v))}</text>")
        line = [f"{x:.1f},{ypos(v):.1f}" for x, v, p in zip(xs, values, points, strict=True)
                if v is not None and p.kind == "nightly"]
        if len(line) > 1:
            parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, v, p in zip(xs, values, points, strict=True):
            if v is not None:
                fill = color if p.kind == "nightly" else "#fff"
                parts.append(f'<circle cx="{x:.1f}" cy="{ypos(v):.1f}" r="3.5" fill="{fill}" stroke="{color}" '
                             f'stroke-width="1.5" data-kind="{e(p.kind)}"><title>{e(p.kind)} run {e(p.run_id)} '
                             f'({e(p.logical_date or "")}): {e(fmt.format(v))}</title></circle>')
        for i in sorted({0, n - 1}) if n else []:
            anchor = "middle" if n == 1 else "start" if i == 0 else "end"
            parts.append(f'<text x="{xs[i]:.1f}" y="{height - 8}" text-anchor="{anchor}">'
                         f'{e((points[i].logical_date or points[i].name)[:16].replace("T", " "))}</text>')
    parts.append("</svg>")
    return "".join(parts)


class CganGalleryPlugin(AirflowPlugin):
    name = "cgan_gallery"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": TITLE}]
    external_views = [{
        "name": TITLE,
        "href": f"{_base_path()}{URL_PREFIX}/",
        "destination": "nav",
        "category": "browse",
        "url_route": URL_ROUTE,
    }]
