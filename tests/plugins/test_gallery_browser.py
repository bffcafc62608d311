"""The gallery in a real `airflow api-server` (plugin loaded from plugins/, mounted by Airflow)
and in headless Chromium through Airflow's own login page, asserting on what a person sees
(rendered sizes, the text of tick labels and legends), not only on the HTML; with the two ways a
person reaches it from Airflow's own pages: the trigger form (its refusals) and the publish
task's "Published run" link.

The screenshots stay in test-artifacts/:

- gallery.png: the index inside the Airflow UI (Browse -> CGAN gallery), 7 runs, one rejected;
- gallery-1-run.png: the index showing one run (a deep link into the nav view, ?kind=manual);
- gallery-trend-2-runs.png: the trend chart of two runs, one rejected (the chart alone);
- gallery-run.png, gallery-run-gate.png, gallery-run-params.png: one run's page: its top, its
  quality gate checks with thresholds, its parameters (nulls as the defaults the run used);
- gallery-run-rejected.png: a rejected run's gate checks, the failed ones in red;
- gallery-grid.png, gallery-grid-where.png: one grid zoomed 2x, and where it lives (pack, member,
  commands); gallery-grid-3x.png: 3x;
- gallery-dag-run-tab.png: the DAG run page's Gallery tab in Airflow's own layout;
- gallery-dag-run-tab-to-logs.png: the publish task's logs, opened from a link in that tab;
- form-grids-0.png, form-seed-abc.png: the trigger form refusing Grids 0 and Seed `abc`, each
  value kept as typed;
- publish-extra-link.png: the publish task's Details tab with its "Published run" link.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from urllib.parse import quote, unquote

import pytest

from tests.airflow_stack import airflow_env, s3_connection
from tests.plugins.browser import api_server, chromium, find_chromium, free_port
from tests.plugins.conftest import REPO

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


BUCKET = "gallery-ui"
NIGHTS = [f"2026-05-{d:02d}" for d in range(1, 7)]
REJECTED_NIGHT = 3  # its label accuracy misses the gate's 0.90
MANUAL_RUN_ID = "manual__2026-05-06T12:00:00+00:00"  # the one manual run: the index's 1-run view


def run_name(run_id: str) -> str:
    """The run's key under runs/, as the plan makes it (what the DAG run tab looks up)."""
    from cgan.run.plan import safe_run_id

    return safe_run_id(run_id)


NEWEST = run_name(f"scheduled__{NIGHTS[-1]}T02:00:00+00:00")
MANUAL = run_name(MANUAL_RUN_ID)


@pytest.fixture(scope="module")
def ui_runs(local_s3, tmp_path_factory):
    """Six nightly runs (one rejected by the quality gate) and one manual run, with real digit grids
    (the committed generator), real latency plots and the gate's verdict, plus a half-published
    prefix; returns {run name: publish_fake_run's result (grids: PNG bytes)}."""
    import random

    from cgan.quality.gate import Thresholds
    from cgan.recipe.perf_plot import latency_plot_png
    from tests.plugins.conftest import generator_grid_pngs, publish_fake_run, run_params

    client = local_s3["client"]
    client.create_bucket(Bucket=BUCKET)
    tmp = tmp_path_factory.mktemp("ui_runs")
    runs = {}
    for n, night in enumerate([*NIGHTS, None]):
        rng = random.Random(n)
        samples = [60 + 15 * rng.random() + (25 if rng.random() < 0.05 else 0) for _ in range(40)]
        mean = sum(samples) / len(samples)
        run_id = f"scheduled__{night}T02:00:00+00:00" if night else MANUAL_RUN_ID
        logical_date = f"{night}T02:00:00+00:00" if night else "2026-05-06T12:00:00+00:00"
        seed = int(f"{night}020000".replace("-", "")) if night else 42  # nightly: derived from the date
        runs[run_name(run_id)] = publish_fake_run(
            client, BUCKET, tmp, run_name(run_id), run_id=run_id, logical_date=logical_date,
            grid_pngs=generator_grid_pngs(20260501 + n, 4), grids_per_s=round(1000 / mean, 2),
            latency_ms_mean=round(mean, 2),
            label_accuracy=0.62 if n == REJECTED_NIGHT else round(0.955 + 0.004 * n, 3),
            latency_plot=latency_plot_png([{"samples_ms": samples, "device": "cpu", "batch": 100}]),
            params=run_params(4, seed=seed), gate=Thresholds())
    client.put_object(Bucket=BUCKET, Key="runs/manual__being-published/attempts/20260507T000000.000000Z-000000/"
                      "packs/pack_00000000.tar", Body=runs[NEWEST]["grids"][0])
    return runs


@pytest.fixture(scope="module")
def server(airflow_home, local_s3, ui_runs, tmp_path_factory):
    """The api-server of a temp AIRFLOW_HOME: SimpleAuthManager (user admin), plugins from
    plugins/, connection cgan_s3 -> the local S3 server, bucket gallery-ui. Its own copy of the
    migrated DB, holding the DAG (serialized from dags/, so its run pages exist for the UI)."""
    import shutil
    import subprocess

    from tests.airflow_stack import AIRFLOW

    home = tmp_path_factory.mktemp("api_home")
    shutil.copy(airflow_home / "airflow.db", home / "airflow.db")
    port = free_port()
    passwords = home / "passwords.json"
    env = airflow_env(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__AUTH_MANAGER=SIMPLE,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
        CGAN_PUBLISH_BUCKET=BUCKET,
    )
    subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=300)
    with api_server(env, port, home / "api-server.log") as url:
        yield {"url": url, "password": json.loads(passwords.read_text())["admin"], "log": home / "api-server.log"}


@pytest.fixture(scope="module")
def token(server):
    import httpx

    response = httpx.post(f"{server['url']}/auth/token", json={"username": "admin", "password": server["password"]})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def dag_run(server, token):
    """The manual run as a DAG run in Airflow's DB (queued: no scheduler here), for its run page."""
    import httpx

    response = httpx.post(f"{server['url']}/api/v2/dags/cgan_generation/dagRuns",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"dag_run_id": MANUAL_RUN_ID, "logical_date": "2026-05-06T12:00:00Z", "conf": {}})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def binary() -> str:
    """Headless Chromium's executable; the browser tests skip without it (CI installs it)."""
    found = find_chromium()
    if not found:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return found


def test_api_server_mounts_the_gallery_behind_airflow_login(server, token, ui_runs):
    import httpx

    url, auth = server["url"], {"Authorization": f"Bearer {token}"}
    newest = quote(NEWEST, safe="")
    grid = f"{url}/cgan-gallery/runs/{newest}/grid/0"
    assert httpx.get(f"{url}/cgan-gallery/").status_code == 401
    assert httpx.get(grid).status_code == 401
    assert httpx.get(f"{url}/cgan-gallery/", cookies={"_token": "not-a-jwt"}).status_code == 401
    page = httpx.get(f"{url}/cgan-gallery/", headers=auth)
    assert page.status_code == 200, page.text
    for name in ui_runs:
        assert f'href="/cgan-gallery/runs/{quote(name, safe="")}"' in page.text  # links carry the mount prefix
    assert "being-published" not in page.text
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    png = httpx.get(grid, cookies={"_token": token})
    assert png.status_code == 200 and png.content == ui_runs[NEWEST]["grids"][0]
    assert png.headers["etag"] and httpx.get(grid, cookies={"_token": token},
                                             headers={"If-None-Match": png.headers["etag"]}).status_code == 304
    plot = httpx.get(f"{url}/cgan-gallery/runs/{newest}/img/perf/latency.png", headers=auth)
    assert plot.status_code == 200 and plot.content == ui_runs[NEWEST]["perf/latency.png"]
    assert httpx.get(f"{url}/cgan-gallery/runs/{newest}/grid/4", headers=auth).status_code == 404
    assert httpx.get(f"{url}/cgan-gallery/runs/manual__being-published/grid/0", headers=auth).status_code == 404
    plugins = httpx.get(f"{url}/api/v2/plugins", headers=auth).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "cgan_gallery"]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/cgan-gallery"
    nav, tab = ours["external_views"]
    assert (nav["url_route"], nav["href"], nav["destination"]) == ("cgan-gallery", "/cgan-gallery/", "nav")
    assert (tab["url_route"], tab["destination"]) == ("cgan-gallery-run", "dag_run")
    assert tab["href"] == "/cgan-gallery/dags/{DAG_ID}/runs/{RUN_ID}"


def _check_screenshot(data: bytes) -> None:
    from PIL import Image

    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (1280, 900)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 200  # a rendered page, not a blank or error screen


# JavaScript run in the page (DevTools protocol; the gallery itself runs none). FRAME: the document
# a check reads: the gallery's iframe inside Airflow's layout, or the page itself.
FRAME = "(document.querySelector('iframe') ? document.querySelector('iframe').contentDocument : document)"


def _texts(page, selector: str, doc: str = "document") -> list[str]:
    return page.evaluate(f"[...{doc}.querySelectorAll({json.dumps(selector)})].map(e => e.textContent.trim())")


def _box(page, selector: str, doc: str = "document") -> dict:
    """Where an element is drawn, in CSS pixels (getBoundingClientRect)."""
    return page.evaluate(f"(() => {{ const r = {doc}.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                         " return {x: r.x, y: r.y, width: r.width, height: r.height} })()")


def _login(page, url: str, password: str, next_path: str) -> None:
    """Airflow's own login page (SimpleAuthManager): it stores the JWT in the `_token` cookie
    and goes to `next`."""
    page.navigate(f"{url}/auth/login?next={quote(next_path, safe='/')}")
    page.wait_for("document.querySelector('input[name=username]') && "
                  "document.querySelector('input[name=password]')", what="the login form")
    for field, value in (("username", "admin"), ("password", password)):
        page.evaluate(f"document.querySelector('input[name={field}]').focus()")
        page.call("Input.insertText", text=value)
    page.evaluate("document.querySelector('button[type=submit]').click()")
    page.wait_for(f"location.pathname === {json.dumps(next_path)}", what="the redirect after login")


def _trend_2_runs_page(tmp_path) -> str:
    """The trend chart of two runs (the second rejected) in a file page with the gallery's stylesheet."""
    from cgan.publishing.gallery import trend
    from tests.plugins.conftest import load_plugin_module

    plugin = load_plugin_module()
    page = tmp_path / "trend-2-runs.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{plugin.CSS}</style><h2>Trend over time</h2>"
                    f"{plugin.trend_svg(trend(_two_runs()))}")
    return page.as_uri()


def _two_runs():
    from cgan.publishing.gallery import RunSummary

    def run(night: str, gps: float, acc: float, status: str) -> RunSummary:
        return RunSummary(name=night, run_id=f"scheduled__{night}T02:00:00+00:00",
                          logical_date=f"{night}T02:00:00+00:00", published_at=None, grids=100, grids_per_s=gps,
                          latency_ms_mean=70.0, label_accuracy=acc, parity_max_abs_err=2e-6, backend="onnxruntime",
                          target="cpu", objects=5, status=status)

    return [run("2026-05-01", 14.46, 0.955, "accepted"), run("2026-05-02", 9.8, 0.62, "rejected")]


def test_gallery_in_chromium_after_airflow_login(server, ui_runs, dag_run, binary, tmp_path):
    url = server["url"]
    newest = quote(NEWEST, safe="")
    with chromium(binary, tmp_path / "chromium-profile") as page:
        # Without a login the gallery refuses the browser and links to Airflow's login page.
        page.navigate(f"{url}/cgan-gallery/")
        page.wait_for("document.body && document.body.innerText.includes('Sign in to Airflow')", what="401 page")

        # -- the index in Airflow's layout (Browse -> CGAN gallery), 7 runs, one rejected
        _login(page, url, server["password"], "/plugin/cgan-gallery")
        rows = page.wait_for(
            f"(() => {{ const d = document.querySelector('iframe') && {FRAME}; const t = d && d.querySelector('table');"
            " return t ? t.querySelectorAll('tbody tr').length : 0 })()", timeout=90, what="the gallery iframe")
        assert rows == len(NIGHTS) + 1
        page.wait_for(f"{FRAME}.querySelector('svg .point') !== null", what="the trend chart")
        ticks = _texts(page, "svg.trend text.tick", FRAME)
        assert ticks[:5] == ["0", "5", "10", "15", "20"]  # grids/s: round ticks from zero
        assert ticks[5:] == ["40%", "60%", "80%", "100%"]  # label accuracy, the rejected 62 % in view
        newest_run = ui_runs[MANUAL]["manifest"]["summary"]  # 2026-05-06 12:00, after the last nightly run
        assert _texts(page, "svg.trend text.value", FRAME) == [  # the newest run says its value
            f"{newest_run['grids_per_s']:,.2f}", f"{newest_run['label_accuracy']:.1%}"]
        assert "rejected by the quality gate" in _texts(page, "svg.trend .legend text", FRAME)
        rejected = page.evaluate(f"[...{FRAME}.querySelectorAll('svg.trend [data-status=rejected]')]"
                                 ".map(e => [e.tagName, getComputedStyle(e).stroke])")
        assert rejected == [["path", "rgb(220, 38, 38)"]] * 2  # a red cross in each panel
        assert page.evaluate(f"{FRAME}.querySelectorAll('svg.trend circle.point').length") == 12
        time.sleep(1)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery.png"))

        # -- one run: a deep link into the nav view (its URL follows the iframe's), ?kind=manual
        page.navigate(f"{url}/plugin/cgan-gallery/cgan-gallery/?kind=manual")
        page.wait_for(f"document.querySelector('iframe') && {FRAME}.querySelector('svg .point') !== null && "
                      f"{FRAME}.location.search === '?kind=manual'", timeout=90, what="the 1-run index")
        assert page.evaluate(f"{FRAME}.querySelectorAll('table tbody tr').length") == 1
        values = _texts(page, "svg.trend text.value", FRAME)
        summary = ui_runs[MANUAL]["manifest"]["summary"]
        assert values == [f"{summary['grids_per_s']:,.2f}", f"{summary['label_accuracy']:.1%}"]  # a number, not a dot
        assert _texts(page, "svg.trend text.tick", FRAME) == ["0", "5", "10", "15", "20", "95%", "96%", "97%", "98%",
                                                              "99%", "100%"]
        time.sleep(1)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-1-run.png"))

        # -- two runs, the second rejected: the chart alone (its markup as the index renders it)
        page.navigate(_trend_2_runs_page(tmp_path))
        page.wait_for("document.querySelector('svg.trend') !== null", what="the 2-run chart")
        assert _texts(page, "svg.trend text.value") == ["14.46", "9.80", "95.5%", "62.0%"]
        assert _texts(page, "svg.trend text.tick")[:4] == ["0", "5", "10", "15"]
        assert _box(page, "svg.trend")["width"] == 960
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-trend-2-runs.png"))

        # -- one run's page: every grid image loads through the cookie; the way back into Airflow
        page.navigate(f"{url}/cgan-gallery/runs/{newest}")
        loaded = page.wait_for(
            "(() => { const i = [...document.images]; return i.length === 5 &&"
            " i.every(x => x.complete && x.naturalWidth > 0) ? i.length : 0 })()", what="the run's images")
        assert loaded == 5  # 4 grids + the latency plot
        run_id = quote(f"scheduled__{NIGHTS[-1]}T02:00:00+00:00", safe="")
        links = dict(page.evaluate("[...document.querySelectorAll('p.airflow a')].map(a => [a.textContent,"
                                   " a.getAttribute('href')])"))
        assert links["DAG run"] == f"/dags/cgan_generation/runs/{run_id}"
        assert links["publish"] == f"/dags/cgan_generation/runs/{run_id}/tasks/publish"
        assert links["inference"] == f"/dags/cgan_generation/runs/{run_id}/tasks/onnxruntime_infer/mapped"
        assert page.evaluate("document.querySelector('p.ok').innerText").startswith(
            "Accepted by the quality gate: label_accuracy 0.975 ≥ 0.9;")
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-run.png"))
        params = dict(page.evaluate("[...document.querySelectorAll('table.params tr')].map(r =>"
                                    " [r.cells[0].innerText, r.cells[1].innerText])"))
        assert params["gate_min_label_accuracy"] == "default (0.90)"
        assert params["keep_raw_outputs"] == "no (default)" and params["grids_per_shard"] == "automatic (1 shard)"
        assert params["seed"] == "20260506020000 (derived from the logical date)"
        for heading, shot in (("Quality gate: accepted", "gallery-run-gate.png"),
                              ("Parameters", "gallery-run-params.png")):
            page.evaluate(f"[...document.querySelectorAll('h2')].find(h => h.textContent === {json.dumps(heading)})"
                          ".scrollIntoView()")
            time.sleep(0.3)
            _check_screenshot(page.screenshot(ARTIFACTS / shot))

        # -- a grid's page: the run page's grid links to it; 2x, pixel-exact, labelled, where it lives
        page.evaluate("document.querySelector('a > img.grid').parentElement.click()")
        page.wait_for(f"location.pathname === '/cgan-gallery/runs/{newest}/zoom/0' && "
                      "document.querySelector('img.zoomed') && document.querySelector('img.zoomed').complete &&"
                      " document.querySelector('img.zoomed').naturalWidth > 0", what="the grid page")
        image = _box(page, "img.zoomed")
        assert (image["width"], image["height"]) == (560, 560)  # 280 x 280 at 2x
        assert page.evaluate("[document.querySelector('img.zoomed').naturalWidth, getComputedStyle("
                             "document.querySelector('img.zoomed')).imageRendering]") == [280, "pixelated"]
        assert _texts(page, ".zoom .cols span") == [str(d) for d in range(10)]
        columns = [_box(page, f".zoom .cols span:nth-child({d + 1})") for d in range(10)]
        assert [c["x"] - image["x"] for c in columns] == [56 * d for d in range(10)]  # each over its digit
        rows = [_box(page, f".zoom .rows span:nth-child({r + 1})") for r in range(10)]
        assert [r["y"] - image["y"] for r in rows] == [56 * r for r in range(10)]
        text = page.evaluate("document.body.innerText")
        pack = ui_runs[NEWEST]["manifest"]["packs"][0]["key"]
        assert f"aws s3 cp s3://{BUCKET}/{pack} - | tar -xO grid_00000000.png > grid_00000000.png" in text
        assert "20260506020000: the grid's noise is drawn from PCG64 seeded with [20260506020000, 0]" in text
        assert page.evaluate("getComputedStyle(document.querySelector('pre.copy code')).userSelect") == "all"
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-grid.png"))
        page.evaluate("[...document.querySelectorAll('h2')].find(h => h.textContent === 'Where it lives')"
                      ".scrollIntoView()")
        time.sleep(0.3)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-grid-where.png"))
        page.evaluate("document.querySelector('a[rel=next]').click()")
        # the new URL shows before its document is parsed: wait for the pager's link itself
        page.wait_for(f"location.pathname === '/cgan-gallery/runs/{newest}/zoom/1' && "
                      "[...document.querySelectorAll('.pager a')].some(a => a.textContent === '3x')",
                      what="the next grid")
        page.evaluate("[...document.querySelectorAll('.pager a')].find(a => a.textContent === '3x').click()")
        page.wait_for("location.search === '?zoom=3' && document.querySelector('img.zoomed') &&"
                      " document.querySelector('img.zoomed').complete", what="3x")
        assert _box(page, "img.zoomed")["width"] == 840
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-grid-3x.png"))

        # -- the rejected run: what it missed, in red, against the thresholds
        rejected = run_name(f"scheduled__{NIGHTS[REJECTED_NIGHT]}T02:00:00+00:00")
        page.navigate(f"{url}/cgan-gallery/runs/{quote(rejected, safe='')}")
        page.wait_for("document.querySelector('table tr.failed') !== null", what="the rejected run's gate")
        assert page.evaluate("document.querySelector('p.warn').innerText").startswith("Rejected by the quality gate")
        failed = page.evaluate("[...document.querySelectorAll('tr.failed')].map(r => [r.cells[0].innerText,"
                               " r.cells[2].innerText, getComputedStyle(r.cells[0]).color])")
        assert failed == [["label_accuracy", "≥ 0.9", "rgb(153, 27, 27)"],
                          ["class_accuracy (digit 0, the worst)", "≥ 0.75", "rgb(153, 27, 27)"]]
        page.evaluate("[...document.querySelectorAll('h2')].find(h => h.textContent === 'Quality gate: rejected')"
                      ".scrollIntoView()")
        time.sleep(0.3)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-run-rejected.png"))

        # -- the DAG run page's Gallery tab (destination dag_run): Airflow's layout around the run's page
        page.navigate(f"{url}/dags/cgan_generation/runs/{quote(MANUAL_RUN_ID, safe='')}/plugin/cgan-gallery-run")
        page.wait_for(f"document.querySelector('iframe') && {FRAME}.querySelector('h1') && "
                      f"{FRAME}.querySelector('h1').textContent === 'Run {MANUAL_RUN_ID}'", timeout=90,
                      what="the Gallery tab")
        assert page.evaluate("document.querySelector('iframe').getAttribute('src')") == \
            f"/cgan-gallery/dags/cgan_generation/runs/{quote(MANUAL_RUN_ID, safe='')}"
        page.wait_for(f"[...{FRAME}.images].every(i => i.complete && i.naturalWidth > 0)", what="the tab's images")
        time.sleep(1)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-dag-run-tab.png"))
        # A link into Airflow from inside the frame opens in Airflow's own window (its router), not as
        # a second Airflow inside the frame (the frame's sandbox has no allow-top-navigation).
        page.evaluate(f"[...{FRAME}.querySelectorAll('p.airflow a')].find(a => a.textContent === 'publish').click()")
        run = quote(MANUAL_RUN_ID, safe="")
        page.wait_for(f"location.pathname === '/dags/cgan_generation/runs/{run}/tasks/publish'",
                      what="the publish task's page in the top window")
        page.wait_for("document.body.innerText.includes('PublishRunOperator')", what="the task page")
        assert page.evaluate("document.querySelectorAll('iframe').length") == 0  # no Airflow in a frame
        time.sleep(1)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-dag-run-tab-to-logs.png"))
        page.evaluate("history.back()")  # the browser's Back returns to the Gallery tab
        page.wait_for(f"location.pathname === '/dags/cgan_generation/runs/{run}/plugin/cgan-gallery-run' &&"
                      f" document.querySelector('iframe') && {FRAME}.querySelector('h1') &&"
                      f" {FRAME}.querySelector('h1').textContent === 'Run {MANUAL_RUN_ID}'", what="Back to the tab")


DIALOG = "[...document.querySelectorAll('[role=dialog]')].find(d => d.innerText.includes('Trigger Dag'))"


def _dag_runs(server, token) -> list[dict]:
    import httpx

    response = httpx.get(f"{server['url']}/api/v2/dags/cgan_generation/dagRuns",
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()["dag_runs"]


def _type_into(page, name: str, text: str) -> str:
    """Replace a form field's text as a person would (select all, type), leave it; its value after."""
    page.evaluate(f"(() => {{ const e = document.querySelector('[name=element_{name}]'); e.focus(); e.select() }})()")
    page.call("Input.insertText", text=text)
    page.evaluate("document.activeElement.blur()")
    time.sleep(0.3)
    return page.evaluate(f"document.querySelector('[name=element_{name}]').value")


def _press_trigger(page) -> None:
    page.evaluate(f"[...{DIALOG}.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Trigger').pop()"
                  ".click()")


def _refusal(page) -> str:
    """The text of the form's error box (Airflow shows the API's 400 detail at the top of the form)."""
    return page.wait_for(
        f"(() => {{ const p = [...{DIALOG}.querySelectorAll('p')].find(p => p.innerText.startsWith('Invalid input'));"
        " return p ? p.innerText : '' })()", what="the form's refusal")


def test_the_trigger_form_keeps_a_bad_value_and_its_refusal_names_it(server, token, dag_run, binary,
                                                                      tmp_path):
    """Grids 0 and Seed `abc` as a person types them into Airflow's trigger form: the field keeps
    the value (0 is not clamped to 1; `abc` is not dropped, which ran a date-derived seed), Trigger
    is refused with a message that names the param, the value and the bound, and no run starts.
    Digits in Seed travel as typed."""
    url = server["url"]
    runs_before = {r["dag_run_id"] for r in _dag_runs(server, token)}
    with chromium(binary, tmp_path / "chromium-profile") as page:
        _login(page, url, server["password"], "/dags/cgan_generation")
        page.wait_for("[...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Trigger')",
                      timeout=90, what="the DAG page's Trigger button")
        page.evaluate("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Trigger').click()")
        page.wait_for("document.querySelector('[name=element_num_grids]') && document.querySelector("
                      "'[name=element_seed]')", what="the trigger form")
        help_text = page.evaluate(f"{DIALOG}.innerText")
        assert "How many 10x10 grids (100 digits each) to generate: 1 to 10,000,000." in help_text
        assert "Noise seed, a whole number 0 to 9,007,199,254,740,991; up to 9,223,372,036,854,775,807 in double" \
               " quotes" in help_text

        # -- Grids 0: kept as typed; the refusal names num_grids, 0 and the bound
        assert _type_into(page, "num_grids", "0") == "0"
        _press_trigger(page)
        refusal = _refusal(page)
        assert refusal.startswith("Invalid input for param num_grids: 0 is less than or equal to the minimum of 0")
        assert page.evaluate("document.querySelector('[name=element_num_grids]').value") == "0"
        page.evaluate(f"[...{DIALOG}.querySelectorAll('p')].find(p => p.innerText.startsWith('Invalid input'))"
                      ".scrollIntoView()")
        time.sleep(0.5)
        _check_screenshot(page.screenshot(ARTIFACTS / "form-grids-0.png"))

        # -- Seed abc: kept as typed (the number input it had dropped it); refused, naming seed and 'abc'
        assert _type_into(page, "num_grids", "3") == "3"
        assert _type_into(page, "seed", "abc") == "abc"
        _press_trigger(page)
        page.wait_for(f"{DIALOG}.innerText.includes(\"Invalid input for param seed: 'abc' does not match\")",
                      what="the seed's refusal")
        assert page.evaluate("document.querySelector('[name=element_seed]').value") == "abc"
        page.evaluate("document.querySelector('[name=element_seed]').scrollIntoView({block: 'center'})")
        time.sleep(0.3)
        _check_screenshot(page.screenshot(ARTIFACTS / "form-seed-abc.png"))
        assert {r["dag_run_id"] for r in _dag_runs(server, token)} == runs_before  # nothing started

        # -- a seed past 2**53 - 1 as a number: the browser rounds it, so it is refused, never run;
        # in double quotes it travels as typed
        _type_into(page, "seed", "9007199254740993")
        _press_trigger(page)
        page.wait_for(f"{DIALOG}.innerText.includes('Invalid input for param seed: 9007199254740992 is greater than"
                      " or equal to the maximum of 9007199254740992')", what="the rounded seed's refusal")
        assert {r["dag_run_id"] for r in _dag_runs(server, token)} == runs_before
        assert _type_into(page, "seed", '"9007199254740993"') == "9007199254740993"
        _press_trigger(page)
        page.wait_for("location.pathname.startsWith('/dags/cgan_generation/runs/manual__')", what="the new run's page")
    (new,) = [r for r in _dag_runs(server, token) if r["dag_run_id"] not in runs_before]
    assert new["conf"]["seed"] == "9007199254740993" and new["conf"]["num_grids"] == 3
    from cgan.run.plan import validate

    assert validate(new["conf"]).seed == 9007199254740993  # what plan runs with


def test_the_publish_tasks_link_opens_the_runs_gallery_tab_inside_airflow(server, token, dag_run, binary,
                                                                          tmp_path):
    """The publish task's "Published run" extra link (Details -> Extra Links) opens the DAG run's
    Gallery tab in Airflow's own window. The link's XCom is what the task runner stores at the end
    of publish (`_link_PublishedRunLink`, from PublishedRunLink.get_link; the DAG test checks that
    a real run stores it); here it is written through the REST API for the queued manual run."""
    import httpx

    url, auth = server["url"], {"Authorization": f"Bearer {token}"}
    run = quote(MANUAL_RUN_ID, safe="")
    tab = f"/dags/cgan_generation/runs/{run}/plugin/cgan-gallery-run"
    response = httpx.post(f"{url}/api/v2/dags/cgan_generation/dagRuns/{run}/taskInstances/publish/xcomEntries",
                          headers=auth, json={"key": "_link_PublishedRunLink", "value": tab})
    assert response.status_code == 201, response.text
    links = httpx.get(f"{url}/api/v2/dags/cgan_generation/dagRuns/{run}/taskInstances/publish/links", headers=auth)
    assert links.json()["extra_links"] == {"Published run": tab}
    with chromium(binary, tmp_path / "chromium-profile") as page:
        _login(page, url, server["password"], f"/dags/cgan_generation/runs/{run}/tasks/publish/details")
        link = page.wait_for("(() => { const a = [...document.querySelectorAll('a')].find(a => a.innerText.trim() ==="
                             " 'Published run'); return a ? [a.getAttribute('href'), a.getAttribute('target')] :"
                             " null })()", timeout=90, what="the Published run link")
        assert link == [tab, "_self"]  # Airflow's own window, not a new one
        page.evaluate("[...document.querySelectorAll('a')].find(a => a.innerText.trim() === 'Published run')"
                      ".scrollIntoView()")
        time.sleep(0.3)
        _check_screenshot(page.screenshot(ARTIFACTS / "publish-extra-link.png"))
        page.evaluate("[...document.querySelectorAll('a')].find(a => a.innerText.trim() === 'Published run').click()")
        page.wait_for(f"decodeURIComponent(location.pathname) === {json.dumps(unquote(tab))}", what="the Gallery tab")
        page.wait_for(f"document.querySelector('iframe') && {FRAME}.querySelector('h1') && "
                      f"{FRAME}.querySelector('h1').textContent === 'Run {MANUAL_RUN_ID}'", timeout=90,
                      what="the run's gallery page inside Airflow")
