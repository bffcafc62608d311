"""The gallery in a real `airflow api-server` (plugin loaded from plugins/, mounted by Airflow)
and, once, in headless Chromium through Airflow's own login page.

The screenshots stay in test-artifacts/ (gallery.png: the gallery inside the Airflow UI;
gallery-run.png: one run's page).
"""

from __future__ import annotations

import io
import json
import secrets
import time

import pytest

from tests.airflow_stack import airflow_env, s3_connection
from tests.plugins.browser import api_server, chromium, find_chromium, free_port
from tests.plugins.conftest import REPO

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


BUCKET = "gallery-ui"
NIGHTS = [f"2026-05-{d:02d}" for d in range(1, 7)]
NEWEST = f"scheduled__{NIGHTS[-1]}T02-00-00-00-00"


@pytest.fixture(scope="module")
def ui_runs(local_s3, tmp_path_factory):
    """Six nightly runs with real digit grids (the committed generator) and real latency plots,
    plus a half-published prefix; returns {run name: publish_fake_run's result (grids: PNG bytes)}."""
    import random

    from cgan.recipe.perf_plot import latency_plot_png
    from tests.plugins.conftest import generator_grid_pngs, publish_fake_run

    client = local_s3["client"]
    client.create_bucket(Bucket=BUCKET)
    tmp = tmp_path_factory.mktemp("ui_runs")
    runs = {}
    for n, night in enumerate(NIGHTS):
        rng = random.Random(n)
        samples = [60 + 15 * rng.random() + (25 if rng.random() < 0.05 else 0) for _ in range(40)]
        mean = sum(samples) / len(samples)
        name = f"scheduled__{night}T02-00-00-00-00"
        runs[name] = publish_fake_run(
            client, BUCKET, tmp, name, run_id=f"scheduled__{night}T02:00:00+00:00",
            logical_date=f"{night}T02:00:00+00:00", grid_pngs=generator_grid_pngs(20260501 + n, 4),
            grids_per_s=round(1000 / mean, 2), latency_ms_mean=round(mean, 2),
            label_accuracy=round(0.955 + 0.004 * n - 0.01 * (n == 3), 3),
            latency_plot=latency_plot_png([{"samples_ms": samples, "device": "cpu", "batch": 100}]))
    client.put_object(Bucket=BUCKET, Key="runs/manual__being-published/attempts/20260507T000000.000000Z-000000/"
                      "packs/pack_00000000.tar", Body=runs[NEWEST]["grids"][0])
    return runs


@pytest.fixture(scope="module")
def server(airflow_home, local_s3, ui_runs, tmp_path_factory):
    """The api-server of a temp AIRFLOW_HOME: SimpleAuthManager (user admin), plugins from
    plugins/, connection cgan_s3 -> the local S3 server, bucket gallery-ui."""
    home = tmp_path_factory.mktemp("api_home")
    port = free_port()
    passwords = home / "passwords.json"
    env = airflow_env(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{airflow_home}/airflow.db",
        AIRFLOW__CORE__AUTH_MANAGER=SIMPLE,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW_CONN_CGAN_S3=s3_connection(local_s3["endpoint"], local_s3["access_key"], local_s3["secret_key"]),
        CGAN_PUBLISH_BUCKET=BUCKET,
    )
    with api_server(env, port, home / "api-server.log") as url:
        yield {"url": url, "password": json.loads(passwords.read_text())["admin"], "log": home / "api-server.log"}


@pytest.fixture(scope="module")
def token(server):
    import httpx

    response = httpx.post(f"{server['url']}/auth/token", json={"username": "admin", "password": server["password"]})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def test_api_server_mounts_the_gallery_behind_airflow_login(server, token, ui_runs):
    import httpx

    url, auth = server["url"], {"Authorization": f"Bearer {token}"}
    grid = f"{url}/cgan-gallery/runs/{NEWEST}/grid/0"
    assert httpx.get(f"{url}/cgan-gallery/").status_code == 401
    assert httpx.get(grid).status_code == 401
    assert httpx.get(f"{url}/cgan-gallery/", cookies={"_token": "not-a-jwt"}).status_code == 401
    page = httpx.get(f"{url}/cgan-gallery/", headers=auth)
    assert page.status_code == 200, page.text
    for name in ui_runs:
        assert f'href="/cgan-gallery/runs/{name}"' in page.text  # links carry the mount prefix
    assert "being-published" not in page.text
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    png = httpx.get(grid, cookies={"_token": token})
    assert png.status_code == 200 and png.content == ui_runs[NEWEST]["grids"][0]
    assert png.headers["etag"] and httpx.get(grid, cookies={"_token": token},
                                             headers={"If-None-Match": png.headers["etag"]}).status_code == 304
    plot = httpx.get(f"{url}/cgan-gallery/runs/{NEWEST}/img/perf/latency.png", headers=auth)
    assert plot.status_code == 200 and plot.content == ui_runs[NEWEST]["perf/latency.png"]
    assert httpx.get(f"{url}/cgan-gallery/runs/{NEWEST}/grid/4", headers=auth).status_code == 404
    assert httpx.get(f"{url}/cgan-gallery/runs/manual__being-published/grid/0", headers=auth).status_code == 404
    plugins = httpx.get(f"{url}/api/v2/plugins", headers=auth).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "cgan_gallery"]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/cgan-gallery"
    assert ours["external_views"][0]["url_route"] == "cgan-gallery"
    assert ours["external_views"][0]["href"] == "/cgan-gallery/"


def _check_screenshot(data: bytes) -> None:
    from PIL import Image

    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (1280, 900)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 200  # a rendered page, not a blank or error screen


def test_gallery_in_chromium_after_airflow_login(server, ui_runs, tmp_path):
    binary = find_chromium()
    if not binary:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    url = server["url"]
    with chromium(binary, tmp_path / "chromium-profile") as page:
        # Without a login the gallery refuses the browser and links to Airflow's login page.
        page.navigate(f"{url}/cgan-gallery/")
        page.wait_for("document.body && document.body.innerText.includes('Sign in to Airflow')", what="401 page")

        # Airflow's own login page (SimpleAuthManager): it stores the JWT in the `_token` cookie
        # and goes to `next`, here the UI page that shows the gallery in an iframe.
        page.navigate(f"{url}/auth/login?next=/plugin/cgan-gallery")
        page.wait_for("document.querySelector('input[name=username]') && "
                      "document.querySelector('input[name=password]')", what="the login form")
        for field, value in (("username", "admin"), ("password", server["password"])):
            page.evaluate(f"document.querySelector('input[name={field}]').focus()")
            page.call("Input.insertText", text=value)
        page.evaluate("document.querySelector('button[type=submit]').click()")
        page.wait_for("location.pathname === '/plugin/cgan-gallery'", what="the redirect after login")
        rows = page.wait_for(
            "(() => { const f = document.querySelector('iframe');"
            " const d = f && f.contentDocument; const t = d && d.querySelector('table');"
            " return t ? t.querySelectorAll('tbody tr').length : 0 })()", timeout=90, what="the gallery iframe")
        assert rows == len(NIGHTS)
        page.wait_for("document.querySelector('iframe').contentDocument.querySelector('svg circle') !== null",
                      what="the trend chart")
        time.sleep(1)
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery.png"))

        # One run's page: every grid image loads through the cookie.
        page.navigate(f"{url}/cgan-gallery/runs/{NEWEST}")
        loaded = page.wait_for(
            "(() => { const i = [...document.images]; return i.length === 5 &&"
            " i.every(x => x.complete && x.naturalWidth > 0) ? i.length : 0 })()", what="the run's images")
        assert loaded == 5  # 4 grids + the latency plot
        _check_screenshot(page.screenshot(ARTIFACTS / "gallery-run.png"))
