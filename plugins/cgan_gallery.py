"""The CGAN gallery: published runs in the Airflow UI (Browse -> CGAN gallery).

A FastAPI app mounted by the API server at /cgan-gallery, and two external views whose
`url_route` makes the UI show it in an iframe inside Airflow's own layout: a nav entry (Browse ->
CGAN gallery) and a "Gallery" tab on every DAG run page (destination `dag_run`: the UI fills in
{DAG_ID} and {RUN_ID}, so the tab shows that run's gallery page).

Pages are plain server-rendered HTML that works without network access: Jinja2 templates in
templates/cgan_gallery/ with autoescape on; the stylesheet static/cgan_gallery/gallery.css and the
one script static/cgan_gallery/airflow-links.js (it hands the run page's links into Airflow to the
UI's router when the page is framed: the frame's sandbox keeps a link inside it) are inlined in
each page, and the CSP allows exactly those two, by their hashes. All are found next to this
file. The data comes from cgan.publishing.gallery; this file only shapes it for the templates.

    /cgan-gallery/                         published runs (table) + trend of grids/s and label accuracy
    /cgan-gallery/runs/<name>              one run: grids, perf figures and latency plot, quality report
    /cgan-gallery/runs/<name>/zoom/<n>     grid n of that run zoomed 2x or 3x, with where it lives
    /cgan-gallery/runs/<name>/grid/<n>     grid n's PNG (one ranged GET into its pack)
    /cgan-gallery/runs/<name>/img/<key>    a PNG object of that run (only keys its manifest lists)
    /cgan-gallery/dags/<dag>/runs/<run id> the run page of an Airflow run id (the DAG run's Gallery tab)

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
RUN_TAB_ROUTE = "cgan-gallery-run"  # the DAG run page's tab: /dags/<dag>/runs/<run id>/plugin/cgan-gallery-run
TITLE = "CGAN gallery"
DAG_ID = "cgan_generation"  # the gallery shows what this DAG publishes: reading it needs DAG run access
GRIDS_PER_PAGE = 48
GRID_NUMBER = re.compile(r"[0-9]{1,9}")  # a grid in a URL: /runs/<name>/grid/<n>
GRID_PX = 280  # a grid PNG is 280x280: 10 rows (noise vectors) x 10 columns (digits 0..9) of 28 px
DIGIT_PX = 28
ZOOMS = (2, 3)  # the grid page's magnifications (whole pixels: pixel-exact; gallery.css has .z2, .z3)
REJECTED_COLOR = "#dc2626"  # the trend chart's mark of a run the quality gate rejected
CLIENT_TTL_S = 300.0
# The DAG's tasks a run page links to (their logs in the Airflow UI), in pipeline order:
# (task id, label, mapped). The inference task is the one of the run's target.
AIRFLOW_TASKS = (("plan", "plan", False), ("export_onnx", "export", False), ("atc_convert", "atc", False),
                 ("input_bins", "input bins", True), ("onnxruntime_infer", "inference", True),
                 ("msame_infer", "inference", True), ("postprocess", "postprocess", False),
                 ("quality_gate", "quality gate", False), ("publish", "publish", False))
ASCEND_ONLY, CPU_ONLY = {"atc_convert", "msame_infer"}, {"onnxruntime_infer"}
# The params a target's tasks never read (dags/cgan_generation.py: atc_convert reads soc_version and
# precision_mode, msame_infer npu_tool; onnxruntime_infer threads and precision). The run page notes them.
TARGET_PARAMS = {"cpu": ("soc_version", "precision_mode", "npu_tool"), "ascend": ("threads", "precision")}
# Params whose form default is a deployment setting (CGAN_*), not RunParams': never noted "default".
DEPLOYMENT_DEFAULTS = {"num_grids", "target", "soc_version", "devices", "npu_tool", "precision"}

PLUGIN_DIR = Path(__file__).parent  # Airflow imports this file from its plugins folder
TEMPLATES_DIR = PLUGIN_DIR / "templates" / "cgan_gallery"
CSS_FILE = PLUGIN_DIR / "static" / "cgan_gallery" / "gallery.css"

JS_FILE = PLUGIN_DIR / "static" / "cgan_gallery" / "airflow-links.js"

_CSS_BYTES = CSS_FILE.read_bytes()  # inlined as is, so the hash below is the hash of the <style>
CSS = _CSS_BYTES.decode("utf-8")
CSS_HASH = base64.b64encode(hashlib.sha256(_CSS_BYTES).digest()).decode()
_JS_BYTES = JS_FILE.read_bytes()  # the one script (links into Airflow from its iframe), inlined the same way
JS = _JS_BYTES.decode("utf-8")
JS_HASH = base64.b64encode(hashlib.sha256(_JS_BYTES).digest()).decode()
CSP = (f"default-src 'none'; img-src 'self'; style-src 'sha256-{CSS_HASH}'; script-src 'sha256-{JS_HASH}'; "
       "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


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
    """Grid `grid`'s PNG."""
    return f"{_run_url(request, name)}/grid/{grid}"


def _grid_page_url(request: Request, name: str, grid: int, zoom: int = ZOOMS[0]) -> str:
    """Grid `grid`'s page (zoomed, with where it lives)."""
    return f"{_run_url(request, name)}/zoom/{grid}" + (f"?zoom={zoom}" if zoom != ZOOMS[0] else "")


def airflow_run_url(run_id: str, task_id: str | None = None, mapped: bool = False) -> str:
    """The Airflow UI's page of a run of the DAG (Airflow 3.3's React routes:
    /dags/<dag>/runs/<run id>), or of one of its tasks, whose first tab is its logs
    (/dags/<dag>/runs/<run id>/tasks/<task>; a mapped task: .../mapped, the list of its map indexes),
    under [api] base_url's path."""
    url = f"{_base_path()}/dags/{quote(DAG_ID, safe='')}/runs/{quote(run_id, safe='')}"
    if task_id:
        url += f"/tasks/{quote(task_id, safe='')}" + ("/mapped" if mapped else "")
    return url


def _airflow_links(run) -> dict:
    """The run page's way back into Airflow: the DAG run and the logs of its tasks."""
    target = run.summary.target
    skip = CPU_ONLY if target == "ascend" else ASCEND_ONLY if target == "cpu" else set()
    tasks = [{"label": label, "task_id": task_id, "url": airflow_run_url(run.summary.run_id, task_id, mapped),
              "mapped": mapped} for task_id, label, mapped in AIRFLOW_TASKS if task_id not in skip]
    return {"dag_id": DAG_ID, "run": airflow_run_url(run.summary.run_id), "tasks": tasks,
            "tab": f"{airflow_run_url(run.summary.run_id)}/plugin/{RUN_TAB_ROUTE}"}


def _page(request: Request, template: str, title: str, **context: Any) -> str:
    """A page: templates/cgan_gallery/<template> in base.html, with the stylesheet and the script inlined."""
    return templates.get_template(template).render(title=title, css=Markup(CSS), js=Markup(JS), root=_root(request),
                                                   **context)


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
    from cgan.publishing.gallery import load_run

    return _run_page(request, _store_call(load_run, name), page)


@app.get("/dags/{dag_id}/runs/{run_id:path}", response_class=HTMLResponse)
def dag_run_page(request: Request, dag_id: str, run_id: str, page: int = Query(1, ge=1, le=1_000_000),
                 user=Depends(require_user)):
    """The run page of an Airflow run id: what the DAG run page's Gallery tab shows (the UI puts
    {DAG_ID} and {RUN_ID} into the view's href). The UI shows the tab on every DAG's runs."""
    from fastapi import HTTPException

    from cgan.errors import CganError
    from cgan.publishing.gallery import load_run
    from cgan.run.plan import safe_run_id

    if dag_id != DAG_ID:
        raise HTTPException(404, f"The CGAN gallery shows the runs of the DAG {DAG_ID!r}; {dag_id!r} publishes "
                                 "nothing to it.")
    try:
        name = safe_run_id(run_id)
    except CganError as exc:
        raise HTTPException(404, str(exc)) from None
    try:
        run = _store_call(load_run, name)
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        raise HTTPException(404, f"Run {run_id!r} of {DAG_ID} is not published (yet): its publish task writes "
                                 f"runs/{name}/manifest.json when the run has made and checked its grids. See its "
                                 "Task Instances tab for where it is.") from None
    return _run_page(request, run, page)


def _run_page(request: Request, run, page: int) -> HTMLResponse:
    from cgan.layout.published import LATENCY_PLOT_KEY
    from cgan.layout.workspace import grid_name
    from cgan.publishing.gallery import gate_checks

    img_url = partial(_img_url, request, run.summary.name)
    pages = max(1, math.ceil(run.grids / GRIDS_PER_PAGE))
    page = min(page, pages)
    grid_pager = None
    if pages > 1:
        grid_pager = {"page": page, "pages": pages, "url": _run_url(request, run.summary.name), "links": [
            {"page": p, "label": label, "current": p == page}
            for p, label in ((1, "first"), (max(1, page - 1), "previous"), (min(pages, page + 1), "next"),
                             (pages, "last"))]}
    grid_url, page_url = partial(_grid_url, request, run.summary.name), partial(_grid_page_url, request,
                                                                                    run.summary.name)
    grids = [{"url": grid_url(g), "page": page_url(g), "label": grid_name(g)}
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
        quality=run.quality, per_class=_per_class(run.quality), gate_checks=gate_checks(run.quality),
        params=_params(run), details=_details(run.manifest), airflow=_airflow_links(run)))


@app.get("/runs/{name}/zoom/{grid}", response_class=HTMLResponse)
def grid_page(request: Request, name: str, grid: str, zoom: int = Query(ZOOMS[0]), user=Depends(require_user)):
    """One grid zoomed (whole-pixel magnification, drawn pixelated), its digit columns and noise
    rows labelled, the run's seed, and where it lives: its pack's key, the tar member, and the
    commands that fetch it."""
    from fastapi import HTTPException

    from cgan.layout.workspace import grid_name
    from cgan.publishing.gallery import locate_grid

    if not GRID_NUMBER.fullmatch(grid):
        raise HTTPException(404, f"{grid!r} is not a grid number (0, 1, 2, ...) of run {name!r}")
    if zoom not in ZOOMS:
        raise HTTPException(404, f"zoom must be one of {', '.join(map(str, ZOOMS))}, got {zoom}")
    place = _store_call(locate_grid, name, int(grid))
    run, n, bucket = place.summary, place.grid, _bucket()
    page_url = partial(_grid_page_url, request, run.name)
    last = place.grids - 1
    end = place.offset + place.size - 1
    return HTMLResponse(_page(
        request, "grid.html", f"{grid_name(n)} of {run.run_id}: {TITLE}", run=run, place=place, label=grid_name(n),
        png_url=_grid_url(request, run.name, n),
        run_page=_run_url(request, run.name) + (f"?page={n // GRIDS_PER_PAGE + 1}" if n >= GRIDS_PER_PAGE else ""),
        zoom=zoom, px=GRID_PX * zoom, digits=range(GRID_PX // DIGIT_PX),
        zooms=[{"zoom": z, "url": page_url(n, z), "current": z == zoom} for z in ZOOMS],
        nav=[{"label": label, "url": page_url(g, zoom) if g is not None else None}
             for label, g in (("first", 0 if n > 0 else None), ("previous", n - 1 if n > 0 else None),
                              ("next", n + 1 if n < last else None), ("last", last if n < last else None))],
        pack_uri=f"s3://{bucket}/{place.pack_key}",
        tar_cmd=f"aws s3 cp s3://{bucket}/{place.pack_key} - | tar -xO {place.member} > {place.member}",
        range_cmd=(f"aws s3api get-object --bucket {bucket} --key {place.pack_key} "
                   f"--range bytes={place.offset}-{end} {place.member}"),
        sha_cmd=f"sha256sum {place.member}  # {place.sha256}"))


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


def _params(run) -> list:
    """The run's params as cgan.publishing.gallery.param_rows shows them: nulls as the defaults
    the run used, the form's fixed defaults noted (cgan.run.plan.RunParams, less the params whose
    form default is a deployment setting: num_grids, target, soc_version, devices, npu_tool,
    precision), the seed derived from the logical date noted, params the target does not use noted."""
    from datetime import datetime

    from cgan.publishing.gallery import param_rows
    from cgan.run.plan import RunParams, derive_seed

    params = run.manifest.get("params")
    if not isinstance(params, dict) or not params:
        return []
    defaults = {k: v for k, v in RunParams().as_dict().items() if k not in DEPLOYMENT_DEFAULTS}
    derived = None
    try:
        derived = derive_seed(datetime.fromisoformat(run.summary.logical_date or ""))
    except ValueError:
        pass
    target = params.get("target")
    unused = {k: f"not used on {target}" for k in TARGET_PARAMS.get(str(target), ())}
    return param_rows(params, defaults=defaults, quality=run.quality, perf=run.perf, derived_seed=derived,
                      unused=unused)


def _details(manifest: dict) -> list[dict]:
    """The manifest's model and tools sections: title and (key, value as text) rows."""
    sections = []
    for section, title in (("model", "Model"), ("tools", "Tools")):
        value = manifest.get(section)
        if isinstance(value, dict) and value:
            sections.append({"title": title, "rows": [(str(k), _shown(v)) for k, v in value.items()]})
    return sections


def nice_ticks(lo: float, hi: float, intervals: int = 4) -> tuple[list[float], int]:
    """Round ticks that cover lo..hi: a step of 1, 2, 2.5 or 5 x 10^k giving about `intervals`
    intervals, from a multiple of the step at or below lo to one at or above hi; and the decimals
    the step needs (0 for 5, 1 for 2.5 or 0.5, ...)."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / intervals
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    decimals = len(f"{step:.10f}".rstrip("0").split(".")[1])
    return [round(i * step, decimals + 3) for i in range(first, last + 1)], decimals


def _shown(value: Any) -> str:
    """A model or tools value as text: "not recorded" for null, no/yes for false/true, else as is or JSON."""
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else json.dumps(value)


def trend_svg(points, width: int = 960, height: int = 222) -> Markup:
    """Inline SVG (templates/cgan_gallery/trend.svg): grids/s and label accuracy per run on a time
    axis (oldest left), two panels side by side, a legend under them. Nightly runs are filled
    points joined by a line, manual runs hollow points, runs the quality gate rejected a red cross.
    The y axis has round ticks (0/5/10/15 grids/s, 95/96/97 %); with up to 3 runs every point is
    labelled with its value (a single run is a number, not a lone dot), else the newest. The
    geometry is computed here, every number formatted."""
    n = len(points)
    times = [p.when.timestamp() if p.when else None for p in points]
    known_t = [t for t in times if t is not None]
    t_lo, t_hi = (min(known_t), max(known_t)) if known_t else (0.0, 0.0)

    def frac(i: int) -> float:  # position on the time axis; runs without a time keep their order
        t = times[i]
        if t is None or t_hi <= t_lo:
            return 0.5 if n == 1 else i / (n - 1)
        return (t - t_lo) / (t_hi - t_lo)

    gap, left, right, top, bottom = 40, 58, 16, 26, 52
    panel_w = (width - gap) / 2
    plot_w, plot_h = panel_w - left - right, height - top - bottom
    labelled = set(range(n)) if n <= 3 else {n - 1}
    panels = []
    def plotted(v: float | None) -> float | None:  # a value a manifest can hold but no axis can show: no point
        return v if v is not None and math.isfinite(v) and abs(v) < 1e12 else None

    for k, (label, values, percent, color) in enumerate((
            ("grids/s (per device)", [plotted(p.grids_per_s) for p in points], False, "#2563eb"),
            ("label accuracy", [plotted(p.label_accuracy) for p in points], True, "#059669"))):
        x0 = k * (panel_w + gap) + left
        xs = [x0 + frac(i) * plot_w for i in range(n)]
        known = [v for v in values if v is not None]
        if percent:  # around the values, within 0..100 %
            lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
            pad = max(0.02, (hi - lo) * 0.15)
            ticks, decimals = nice_ticks(max(0.0, lo - pad) * 100, min(1.0, hi + pad) * 100)
            ticks = [t / 100 for t in ticks]
            fmt = f"{{:.{decimals}%}}"
        else:  # from zero: throughput reads against nothing
            hi = max(known) * 1.1 if known and max(known) > 0 else 1.0
            ticks, decimals = nice_ticks(0.0, hi)
            fmt = f"{{:,.{decimals}f}}"
        value_fmt = "{:.1%}" if percent else "{:,.2f}"
        lo, hi = ticks[0], ticks[-1]

        def ypos(v: float, lo: float = lo, hi: float = hi) -> float:  # this panel's scale
            return top + plot_h - (v - lo) / (hi - lo) * plot_h

        line = [f"{x:.1f},{ypos(v):.1f}" for x, v, p in zip(xs, values, points, strict=True)
                if v is not None and p.kind == "nightly"]
        marks = []
        for i, (x, v, p) in enumerate(zip(xs, values, points, strict=True)):
            if v is None:
                continue
            y = ypos(v)
            rejected = p.status == "rejected"
            marks.append({
                "x": f"{x:.1f}", "y": f"{y:.1f}", "kind": p.kind, "status": p.status, "run_id": p.run_id,
                "logical_date": p.logical_date, "text": value_fmt.format(v),
                "shape": "cross" if rejected else "circle",
                "fill": color if p.kind == "nightly" else "#fff",
                "cross": f"M{x - 4.5:.1f},{y - 4.5:.1f}L{x + 4.5:.1f},{y + 4.5:.1f}"
                         f"M{x - 4.5:.1f},{y + 4.5:.1f}L{x + 4.5:.1f},{y - 4.5:.1f}",
                "label": {"x": f"{x:.1f}", "y": f"{y - 9 if y - top > 14 else y + 17:.1f}",  # under a point at the top
                          "anchor": "middle" if n == 1 or 0 < frac(i) < 1 else "start" if frac(i) == 0 else "end",
                          "color": REJECTED_COLOR if rejected else color} if i in labelled else None,
            })
        panels.append({
            "label": label, "color": color, "x0": f"{x0}", "x_end": f"{x0 + plot_w:.1f}", "tick_x": f"{x0 - 6}",
            "title_y": f"{top - 12}",
            "ticks": [{"y": f"{ypos(v):.1f}", "text_y": f"{ypos(v) + 4:.1f}", "text": fmt.format(v)} for v in ticks],
            "line": " ".join(line) if len(line) > 1 else None,
            "points": marks,
            "axis": [{"x": f"{xs[i]:.1f}", "y": f"{top + plot_h + 16}",
                      "anchor": "middle" if n == 1 else "start" if i == 0 else "end",
                      "text": (points[i].logical_date or points[i].name)[:16].replace("T", " ")}
                     for i in (sorted({0, n - 1}) if n else [])],
        })
    y = height - 8
    legend = {"y": f"{y}", "mark_y": f"{y - 4}", "items": [
        {"shape": shape, "fill": fill, "text": text, "text_x": f"{x + 9}", "cx": f"{x}",
         "cross": f"M{x - 4.5},{y - 8.5}L{x + 4.5},{y + 0.5}M{x - 4.5},{y + 0.5}L{x + 4.5},{y - 8.5}"}
        for x, shape, fill, text in ((left, "circle", "#374151", "nightly run (joined by a line)"),
                                     (left + 200, "circle", "#fff", "manual run"),
                                     (left + 300, "cross", "none", "rejected by the quality gate"))]}
    return Markup(templates.get_template("trend.svg").render(width=width, height=height, panels=panels,
                                                             legend=legend, rejected_color=REJECTED_COLOR))


class CganGalleryPlugin(AirflowPlugin):
    name = "cgan_gallery"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": TITLE}]
    external_views = [
        {  # Browse -> CGAN gallery: /plugin/cgan-gallery shows the index in an iframe in Airflow's layout
            "name": TITLE,
            "href": f"{_base_path()}{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": URL_ROUTE,
        },
        {  # a "Gallery" tab on the DAG run page: /dags/<dag>/runs/<run id>/plugin/cgan-gallery-run shows
           # that run's gallery page (the UI puts the URL-encoded ids into the href; not the nav's URL sync)
            "name": "Gallery",
            "href": f"{_base_path()}{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": RUN_TAB_ROUTE,
        },
    ]
