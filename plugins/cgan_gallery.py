"""The CGAN gallery: published runs in the Airflow UI (Browse -> CGAN gallery).

A FastAPI app mounted by the API server at /cgan-gallery, and a nav entry whose `url_route`
makes the UI show it in an iframe. Pages are plain server-rendered HTML (no JavaScript, no
external CSS, so it works without network access): Jinja2 templates in templates/cgan_gallery/
with autoescape on, and the stylesheet static/cgan_gallery/gallery.css inlined in each page
(the CSP allows exactly that stylesheet, by its hash). Both are found next to this file. The
data comes from cgan.publishing.gallery; this file only shapes it for the templates.

    /cgan-gallery/                         published runs (table) + trend of grids/s and label accuracy
    /cgan-gallery/runs/<name>              one run: grids, perf figures and latency plot, quality report
    /cgan-gallery/runs/<name>/grid/<n>     grid n of that run (one ranged GET into its pack)
    /cgan-gallery/runs/<name>/img/<key>    a PNG object of that run (only keys its manifest lists)

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
import re
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

URL_PREFIX = "/cgan-gallery"
URL_ROUTE = "cgan-gallery"
TITLE = "CGAN gallery"
DAG_ID = "cgan_generation"  # the gallery shows what this DAG publishes: reading it needs DAG run access
GRIDS_PER_PAGE = 48
GRID_NUMBER = re.compile(r"[0-9]{1,9}")  # a grid in a URL: /runs/<name>/grid/<n>
CLIENT_TTL_S = 300.0

PLUGIN_DIR = Path(__file__).parent  # Airflow imports this file from its plugins folder
TEMPLATES_DIR = PLUGIN_DIR / "templates" / "cgan_gallery"
CSS_FILE = PLUGIN_DIR / "static" / "cgan_gallery" / "gallery.css"

_CSS_BYTES = CSS_FILE.read_bytes()  # inlined as is, so the hash below is the hash of the <style>
CSS = _CSS_BYTES.decode("utf-8")
CSS_HASH = base64.b64encode(hashlib.sha256(_CSS_BYTES).digest()).decode()
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
    login = _login_url() if exc.status_code == 401 else None
    page = _page(request, "error.html", f"{exc.status_code}: {TITLE}", status=exc.status_code, detail=exc.detail,
                 login=login)
    return HTMLResponse(page, status_code=exc.status_code, headers=headers)


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

def _escaped(value: Any) -> Markup:
    """How the templates write a value: the autoescaping below, spelled as html.escape does it
    (&quot; and &#x27;, where markupsafe would write &#34; and &#39;). Markup passes unchanged."""
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(str(value), quote=True))


def _num(value: Any, fmt: str = "{:,.2f}") -> str | Markup:
    """A number formatted by `fmt`; a dash for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and
                                                                          not math.isfinite(value)):
        return Markup("&mdash;")
    return fmt.format(value)


def _pct(value: Any) -> str | Markup:
    return _num(value * 100 if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
                "{:.1f} %")


def _shown_time(value: str) -> str:
    """An ISO time as the page shows it (the `when` macro keeps the stored value in its tooltip)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return value


# Created once; templates are compiled on first use. autoescape=True: every {{ value }} is
# escaped unless it is Markup (the stylesheet, the macros, the rendered trend chart).
templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, finalize=_escaped,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.filters.update(num=_num, pct=_pct, shown_time=_shown_time)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _run_url(request: Request, name: str) -> str:
    return f"{_root(request)}/runs/{quote(name, safe='')}"


def _img_url(request: Request, name: str, rel: str) -> str:
    return f"{_run_url(request, name)}/img/{quote(rel, safe='/')}"


def _grid_url(request: Request, name: str, grid: int) -> str:
    return f"{_run_url(request, name)}/grid/{grid}"


def _page(request: Request, template: str, title: str, **context: Any) -> str:
    """A page: templates/cgan_gallery/<template> in base.html, with the stylesheet inlined."""
    return templates.get_template(template).render(title=title, css=Markup(CSS), root=_root(request), **context)


def _gate_html(run) -> Markup:
    """The quality gate's verdict of a run, as the index shows it (the `gate` macro)."""
    return templates.get_template("_macros.html").module.gate(run)  # type: ignore[attr-defined]


@app.get("/", response_class=HTMLResponse)
def index(request: Request, kind: str = Query("all", pattern="^(all|nightly|manual)$"), user=Depends(require_user)):
    from cgan.layout.published import RUNS_PREFIX
    from cgan.publishing.gallery import list_runs, run_kind, trend

    listing = _store_call(list_runs)
    bucket = _bucket()
    runs = [r for r in listing.runs if kind in ("all", run_kind(r.run_id))]
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
    return HTMLResponse(_page(
        request, "index.html", TITLE, bucket=bucket, runs_prefix=RUNS_PREFIX, listed=len(listing.runs),
        kinds=("all", "nightly", "manual"), kind=kind, runs=runs, trend=trend_svg(trend(runs)) if runs else "",
        run_url=partial(_run_url, request), notes=notes))


@app.get("/runs/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str, page: int = Query(1, ge=1, le=1_000_000), user=Depends(require_user)):
    from cgan.layout.published import LATENCY_PLOT_KEY
    from cgan.layout.workspace import grid_name
    from cgan.publishing.gallery import load_run

    run = _store_call(load_run, name)
    img_url = partial(_img_url, request, run.summary.name)
    pages = max(1, math.ceil(run.grids / GRIDS_PER_PAGE))
    page = min(page, pages)
    grid_pager = None
    if pages > 1:
        grid_pager = {"page": page, "pages": pages, "url": _run_url(request, run.summary.name), "links": [
            {"page": p, "label": label, "current": p == page}
            for p, label in ((1, "first"), (max(1, page - 1), "previous"), (min(pages, page + 1), "next"),
                             (pages, "last"))]}
    grid_url = partial(_grid_url, request, run.summary.name)
    grids = [{"url": grid_url(g), "label": grid_name(g)}
             for g in range((page - 1) * GRIDS_PER_PAGE, min(run.grids, page * GRIDS_PER_PAGE))]
    perf = run.perf or {}
    devices = perf.get("devices")
    notes = perf.get("notes")
    return HTMLResponse(_page(
        request, "run.html", f"{run.summary.run_id}: {TITLE}", run=run, grids=grids, grid_pager=grid_pager,
        perf=run.perf, latency=perf.get("latency_ms") if isinstance(perf.get("latency_ms"), dict) else {},
        devices=", ".join(map(str, devices)) if isinstance(devices, list) else devices or "",
        perf_notes=notes if isinstance(notes, list) else [],
        latency_plot_url=img_url(LATENCY_PLOT_KEY) if run.has_latency_plot else None,
        quality=run.quality, per_class=_per_class(run.quality), details=_details(run.manifest)))


@app.get("/runs/{name}/grid/{grid}")
def grid_image(request: Request, name: str, grid: str, user=Depends(require_user)):
    """One grid's PNG: one ranged GET into its pack, checked against the pack's index. Its ETag is
    the PNG's sha256 (from the index): a request that already has it gets a 304, read from nothing
    but the cached index."""
    from fastapi import HTTPException

    from cgan.publishing.gallery import open_grid

    if not GRID_NUMBER.fullmatch(grid):
        raise HTTPException(404, f"{grid!r} is not a grid number (0, 1, 2, ...) of run {name!r}")
    png = _store_call(open_grid, name, int(grid), if_none_match=_etag_asked(request))
    headers = {"Cache-Control": "private, max-age=300", "ETag": f'"{png.etag}"'}
    if png.not_modified:
        return Response(status_code=304, headers=headers)
    return Response(png.data, media_type="image/png", headers=headers)


def _etag_asked(request: Request) -> str | None:
    """The one strong ETag of If-None-Match, unquoted (None for none, `*` or several)."""
    value = request.headers.get("if-none-match", "").strip()
    if len(value) > 2 and value[0] == value[-1] == '"' and '"' not in value[1:-1]:
        return value[1:-1]
    return None


@app.get("/runs/{name}/img/{rel:path}")
def image(name: str, rel: str, user=Depends(require_user)):
    from cgan.publishing.gallery import open_png

    png = _store_call(open_png, name, rel)
    headers = {"Content-Length": str(png.size), "Cache-Control": "private, max-age=300"}
    if png.etag:
        headers["ETag"] = png.etag
    return StreamingResponse(png.chunks(), media_type="image/png", headers=headers)


def _per_class(quality: dict | None) -> list[dict]:
    """The rows of the label accuracy per digit: digit, accuracy, bar width (of 200 px)."""
    per_class = quality.get("per_class_accuracy") if quality else None
    if not isinstance(per_class, dict):
        return []
    rows = []
    for digit, acc in sorted(per_class.items(), key=lambda kv: str(kv[0])):
        known = isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc)
        rows.append({"label": digit, "accuracy": acc, "bar": f"{max(0.0, min(1.0, acc)) * 200 if known else 0:.1f}"})
    return rows


def _details(manifest: dict) -> list[dict]:
    """The manifest's params, model and tools sections: title and (key, value as text) rows."""
    sections = []
    for section, title in (("params", "Parameters"), ("model", "Model"), ("tools", "Tools")):
        value = manifest.get(section)
        if isinstance(value, dict) and value:
            sections.append({"title": title, "rows": [(str(k), v if isinstance(v, str) else json.dumps(v))
                                                      for k, v in value.items()]})
    return sections


def trend_svg(points, width: int = 960, height: int = 190) -> Markup:
    """Inline SVG (templates/cgan_gallery/trend.svg): grids/s and label accuracy per run on a time
    axis (oldest left), two panels side by side; nightly runs are filled points joined by a line,
    manual runs hollow points. The geometry is computed here, every number formatted."""
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
    panels = []
    for k, (label, values, fmt, color, unit) in enumerate((
            ("grids/s (per device)", [p.grids_per_s for p in points], "{:,.1f}", "#2563eb", False),
            ("label accuracy", [p.label_accuracy for p in points], "{:.1%}", "#059669", True))):
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

        ticks = [lo + (hi - lo) * t / 2 for t in range(3)]
        line = [f"{x:.1f},{ypos(v):.1f}" for x, v, p in zip(xs, values, points, strict=True)
                if v is not None and p.kind == "nightly"]
        panels.append({
            "label": label, "color": color, "x0": f"{x0}", "x_end": f"{x0 + plot_w:.1f}", "tick_x": f"{x0 - 6}",
            "title_y": f"{top - 8}",
            "ticks": [{"y": f"{ypos(v):.1f}", "text_y": f"{ypos(v) + 4:.1f}", "text": fmt.format(v)} for v in ticks],
            "line": " ".join(line) if len(line) > 1 else None,
            "points": [{"x": f"{x:.1f}", "y": f"{ypos(v):.1f}", "fill": color if p.kind == "nightly" else "#fff",
                        "kind": p.kind, "run_id": p.run_id, "logical_date": p.logical_date, "text": fmt.format(v)}
                       for x, v, p in zip(xs, values, points, strict=True) if v is not None],
            "axis": [{"x": f"{xs[i]:.1f}", "y": f"{height - 8}",
                      "anchor": "middle" if n == 1 else "start" if i == 0 else "end",
                      "text": (points[i].logical_date or points[i].name)[:16].replace("T", " ")}
                     for i in (sorted({0, n - 1}) if n else [])],
        })
    return Markup(templates.get_template("trend.svg").render(width=width, height=height, panels=panels))


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
