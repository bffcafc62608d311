"""The gallery plugin app (plugins/cgan_gallery.py) with FastAPI's TestClient.

Authentication is Airflow's own: the SimpleAuthManager of this process (its migrated SQLite DB
from the `airflow_home` fixture holds the revoked-token table), tokens issued by its POST
/auth/token endpoint. The published runs are on the real local S3 server.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys

import pytest

from tests.airflow_stack import s3_connection
from tests.plugins.conftest import HOSTILE, HOSTILE_RUN_ID, NEW, OLD, REPO, load_plugin_module, without_own_script

pytestmark = pytest.mark.slow  # needs a migrated Airflow DB (airflow_home fixture)

SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
HTML = {"Accept": "text/html,application/xhtml+xml"}


def _reset_airflow_state():
    from airflow import settings
    from airflow.api_fastapi.app import purge_cached_app
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    settings.configure_vars()
    settings.reconfigure_orm()
    BaseAuthManager._get_token_signer.cache_clear()
    BaseAuthManager._get_token_validator.cache_clear()
    purge_cached_app()


@pytest.fixture(scope="module")
def airflow_auth(airflow_home, tmp_path_factory, local_s3):
    """This process configured like an api-server with the SimpleAuthManager (users admin, viewer)."""
    from airflow.api_fastapi.app import init_auth_manager

    tmp = tmp_path_factory.mktemp("auth")
    mp = pytest.MonkeyPatch()
    for key, value in {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_CONN_CGAN_GALLERY_TEST": s3_connection(local_s3["endpoint"], local_s3["access_key"],
                                                        local_s3["secret_key"]),
        "CGAN_S3_CONN_ID": "cgan_gallery_test",
        "CGAN_PUBLISH_BUCKET": "gallery",
    }.items():
        mp.setenv(key, value)
    _reset_airflow_state()
    try:
        yield init_auth_manager()
    finally:
        mp.undo()
        _reset_airflow_state()


@pytest.fixture(scope="module")
def plugin(airflow_auth):
    module = load_plugin_module()
    module._clients.clear()
    return module


@pytest.fixture(scope="module")
def client(plugin, published):
    from fastapi.testclient import TestClient

    return TestClient(plugin.app)


def login(auth_manager, username: str) -> str:
    """A JWT from the auth manager's own login endpoint (POST /auth/token in the api-server)."""
    from fastapi.testclient import TestClient

    password = auth_manager.get_passwords()[username]
    response = TestClient(auth_manager.get_fastapi_app()).post(
        "/token", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def token(airflow_auth):
    return login(airflow_auth, "viewer")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


PAGES = ["/", f"/runs/{NEW}", f"/runs/{NEW}/zoom/0", f"/runs/{NEW}/grid/0", f"/runs/{NEW}/img/perf/latency.png",
         "/dags/cgan_generation/runs/scheduled__2026-05-02T02:00:00+00:00"]


def test_plugin_declares_app_nav_view_and_dag_run_tab(plugin):
    spec = plugin.CganGalleryPlugin
    assert spec.fastapi_apps == [{"app": plugin.app, "url_prefix": "/cgan-gallery", "name": "CGAN gallery"}]
    nav, tab = spec.external_views
    assert nav["href"] == "/cgan-gallery/" and nav["url_route"] == "cgan-gallery" and nav["destination"] == "nav"
    # Airflow 3.3's UI puts the URL-encoded DAG id and run id into a dag_run view's href
    assert tab == {"name": "Gallery", "href": "/cgan-gallery/dags/{DAG_ID}/runs/{RUN_ID}", "destination": "dag_run",
                   "url_route": "cgan-gallery-run"}


def test_the_views_are_what_airflow_serves_to_its_ui(plugin):
    """Airflow's own checks: destinations its API accepts, url_routes unique across views."""
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    views = [ExternalViewResponse.model_validate(v) for v in plugin.CganGalleryPlugin.external_views]
    assert [v.destination for v in views] == ["nav", "dag_run"]
    assert len({v.url_route for v in views}) == 2


def test_the_task_ids_linked_to_are_the_dags(plugin):
    """The run page links to these tasks' logs: each is a task of dags/cgan_generation.py."""
    source = (REPO / "dags" / "cgan_generation.py").read_text()
    for task_id, _, _ in plugin.AIRFLOW_TASKS:
        assert f'task_id="{task_id}"' in source or re.search(rf"^    def {task_id}\(", source, re.M), task_id


def test_every_route_requires_login(plugin):
    from fastapi.routing import APIRoute

    routes = [r for r in plugin.app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} == {"/", "/runs/{name}", "/runs/{name}/zoom/{grid}", "/runs/{name}/grid/{grid}",
                                        "/runs/{name}/img/{rel:path}", "/dags/{dag_id}/runs/{run_id:path}"}
    for route in routes:
        assert plugin.require_user in [d.call for d in route.dependant.dependencies], route.path


@pytest.mark.parametrize("path", PAGES)
def test_refused_without_login(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Not signed in to Airflow")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


def test_browser_without_login_gets_a_sign_in_link(client):
    response = client.get("/", headers=HTML)
    assert response.status_code == 401 and response.headers["content-type"].startswith("text/html")
    assert 'href="/auth/login?next=%2Fplugin%2Fcgan-gallery" target="_top"' in response.text


def test_invalid_tokens_are_refused(client, airflow_auth, token):
    import jwt
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, secrets.token_hex(64), algorithm="HS512")
    expired = airflow_auth.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"),
                                        expiration_time_in_seconds=-3600)
    for bad in (forged, expired, "garbage", token + "x"):
        assert client.get("/", headers=bearer(bad)).status_code == 401, bad
        client.cookies.set("_token", bad)
        try:
            assert client.get("/").status_code == 401, bad
        finally:
            client.cookies.clear()


def test_revoked_token_is_refused(client, airflow_auth):
    token = login(airflow_auth, "viewer")
    assert client.get("/", headers=bearer(token)).status_code == 200
    airflow_auth.revoke_token(token)  # what logging out does
    assert client.get("/", headers=bearer(token)).status_code == 401


def test_user_without_access_to_the_dag_runs_is_forbidden(client, airflow_auth):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    no_role = airflow_auth.generate_jwt(SimpleAuthManagerUser(username="guest", role=None))
    response = client.get("/", headers=bearer(no_role))
    assert response.status_code == 403 and "cgan_generation" in response.json()["detail"]


def test_index_lists_published_runs_with_trend(client, token):
    response = client.get("/", headers=bearer(token))
    assert response.status_code == 200, response.text
    page = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    table = page[page.index("<h2>Runs</h2>"):]
    assert table.index("scheduled__2026-05-02T02:00:00+00:00") < table.index("scheduled__2026-05-01T02:00:00+00:00")
    assert f'href="/runs/{NEW}"' in page and f'href="/runs/{OLD}"' in page
    assert "half-done" not in page and "1 prefix(es) without a manifest" in page
    assert "<svg" in page and page.count("class=point") == 4  # 2 runs x (grids/s, label accuracy)
    assert "rejected by the quality gate" in page  # the legend
    for shown in ("15.00", "12.50", "95.0 %", "91.0 %", "80.00", "2.00e-06"):
        assert shown in page
    assert "<script" not in without_own_script(page)


def test_the_ui_cookie_is_accepted(client, token):
    client.cookies.set("_token", token)
    try:
        assert client.get("/").status_code == 200
    finally:
        client.cookies.clear()


def test_run_page_shows_grids_perf_and_quality(client, token):
    response = client.get(f"/runs/{NEW}", headers=bearer(token))
    assert response.status_code == 200, response.text
    page = response.text
    assert page.count("<img class=grid") == 4 and "4 grid(s) in 1 pack(s)" in page
    for g in range(4):  # a grid links to its zoomed page
        assert f'<a href="/runs/{NEW}/zoom/{g}"><img class=grid src="/runs/{NEW}/grid/{g}" alt="grid_{g:08d}"' in page
    assert f'src="/runs/{NEW}/img/perf/latency.png"' in page
    assert "p99 120.00" in page and "images/s" in page and "1,500.0" in page
    assert "Label accuracy per digit" in page and "90.5 %" in page and "97.8 %" in page
    assert "num_grids" in page and "onnxruntime" in page


def _param(page: str, name: str) -> str:
    """The text of a row of the Parameters table."""
    row = re.search(rf"<tr><th>{name}</th><td>(.*?)</td></tr>", page[page.index("<h2>Parameters</h2>"):])
    assert row, name
    return re.sub(r"<[^>]+>", "", row.group(1))


def test_run_page_shows_defaults_as_defaults_and_the_thresholds_passed(client, token):
    page = client.get(f"/runs/{NEW}", headers=bearer(token)).text
    # nulls: the value the run used, from its quality report and perf record
    assert _param(page, "gate_min_label_accuracy") == "default (0.90)"
    assert _param(page, "gate_min_class_accuracy") == "default (0.75)"
    assert _param(page, "gate_min_diversity") == "default (0.50)"
    assert _param(page, "grids_per_shard") == "automatic (1 shard)"
    assert _param(page, "devices") == "any (ran on cpu)"
    assert _param(page, "keep_raw_outputs") == "no (default)"  # false as no
    assert _param(page, "num_grids") == "4"
    assert _param(page, "threads") == "1 (default)"
    assert _param(page, "seed") == "20260502020000 (derived from the logical date)"
    assert "null" not in page[page.index("<h2>Parameters</h2>"):page.index("<h2>Model</h2>")]
    # an accepted run shows the thresholds it passed
    assert '<p class=ok>Accepted by the quality gate: label_accuracy 0.95 ≥ 0.9;' in page
    gate = page[page.index("<h2>Quality gate: accepted</h2>"):]
    assert "<td>label_accuracy</td><td class=n>0.95</td><td class=n>≥ 0.9</td><td>passed</td>" in gate
    assert "parity_max_abs_err (cpu, fp32)</td><td class=n>2e-06</td><td class=n>≤ 0.0001</td>" in gate
    assert "class=failed" not in gate


def test_run_page_links_back_to_the_dag_run_and_its_task_logs(client, token):
    page = client.get(f"/runs/{NEW}", headers=bearer(token)).text
    run = "/dags/cgan_generation/runs/scheduled__2026-05-02T02%3A00%3A00%2B00%3A00"
    assert f'In Airflow: <a href="{run}" data-airflow>DAG run</a>' in page  # data-airflow: see airflow-links.js
    for task in ("plan", "export_onnx", "postprocess", "quality_gate", "publish"):
        assert f'href="{run}/tasks/{task}"' in page, task
    for mapped in ("input_bins", "onnxruntime_infer"):  # mapped: the list of its map indexes
        assert f'href="{run}/tasks/{mapped}/mapped"' in page, mapped
    assert "msame_infer" not in page and "atc_convert" not in page  # a cpu run
    assert f'<a href="{run}/plugin/cgan-gallery-run" data-airflow>this page as its Gallery tab</a>' in page


def test_every_zoom_has_its_label_sizes_in_the_stylesheet(plugin):
    css = (REPO / "plugins" / "static" / "cgan_gallery" / "gallery.css").read_text()
    for zoom in plugin.ZOOMS:
        cell = plugin.DIGIT_PX * zoom
        assert f".z{zoom} .cols span{{width:{cell}px}}" in css and f".z{zoom} .rows span{{height:{cell}px;" in css


def test_grid_page_zooms_one_grid_and_says_where_it_lives(client, token, published):
    manifest = published["pngs"][NEW]["manifest"]
    (pack,) = manifest["packs"]
    index = json.loads(published["client"].get_object(Bucket="gallery", Key=pack["index"]["key"])["Body"].read())
    name, offset, size, sha256 = index["members"][2]
    response = client.get(f"/runs/{NEW}/zoom/2", headers=bearer(token))
    assert response.status_code == 200, response.text
    page = response.text
    assert f'<img class=zoomed src="/runs/{NEW}/grid/2" width="560" height="560"' in page  # 2x, pixel-exact
    assert "<h1>Grid 2 <span class=muted>(the run's grids are 0..3)</span></h1>" in page
    assert re.search(r"<div class=cols>" + "".join(f"<span>{d}</span>" for d in range(10)) + "</div>", page)
    assert "<code>20260502020000</code>: the grid's noise is drawn from PCG64 seeded with " \
           "<code>[20260502020000, 2]</code>" in page
    assert f"<code>s3://gallery/{pack['key']}</code> (grids 0..3)" in page
    assert name == "grid_00000002.png"
    assert f"<code>{name}</code>, {size:,} bytes at offset {offset:,} of the tar" in page
    assert f"aws s3 cp s3://gallery/{pack['key']} - | tar -xO grid_00000002.png &gt; grid_00000002.png" in page
    assert f"--range bytes={offset}-{offset + size - 1} grid_00000002.png" in page and sha256 in page
    got = published["client"].get_object(Bucket="gallery", Key=pack["key"], Range=f"bytes={offset}-{offset + size - 1}")
    assert got["Body"].read() == published["pngs"][NEW]["grids"][2]  # the command's range is the grid
    for label, grid in (("first", 0), ("previous", 1), ("next", 3), ("last", 3)):
        assert f'<a href="/runs/{NEW}/zoom/{grid}" rel="{label}">{label}</a>' in page
    assert f'<a href="/runs/{NEW}/zoom/2?zoom=3">3x</a>' in page and f'<a href="/runs/{NEW}">Run ' in page
    assert 'width="840" height="840"' in client.get(f"/runs/{NEW}/zoom/2?zoom=3", headers=bearer(token)).text
    first = client.get(f"/runs/{NEW}/zoom/0", headers=bearer(token)).text
    assert '<span class=muted>first</span><span class=muted>previous</span>' in first
    for bad in ("/zoom/4", "/zoom/x", "/zoom/-1", "/zoom/2?zoom=4", "/zoom/2?zoom=1"):
        response = client.get(f"/runs/{NEW}{bad}", headers=bearer(token))
        assert response.status_code in (404, 422), (bad, response.status_code)


def test_the_dag_run_tab_shows_the_run_of_that_run_id(client, token, local_s3, tmp_path, monkeypatch):
    from cgan.run.plan import safe_run_id
    from tests.plugins.conftest import publish_fake_run

    run_id = "manual__2026-05-03T10:00:00+00:00"
    local_s3["client"].create_bucket(Bucket="gallery-tab")
    publish_fake_run(local_s3["client"], "gallery-tab", tmp_path, safe_run_id(run_id), run_id=run_id,
                     logical_date="2026-05-03T10:00:00+00:00")
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-tab")
    # the UI's href with {DAG_ID} and {RUN_ID} filled in by encodeURIComponent
    response = client.get("/dags/cgan_generation/runs/manual__2026-05-03T10%3A00%3A00%2B00%3A00",
                          headers={**bearer(token), **HTML})
    assert response.status_code == 200, response.text
    assert f"<h1>Run {run_id}</h1>" in response.text
    assert f'src="/runs/{safe_run_id(run_id).replace("+", "%2B")}/grid/0"' in response.text
    other = client.get("/dags/other_dag/runs/x", headers={**bearer(token), **HTML})
    assert other.status_code == 404 and "publishes nothing to it" in other.text
    running = client.get("/dags/cgan_generation/runs/manual__still-running", headers={**bearer(token), **HTML})
    assert running.status_code == 404 and "is not published (yet)" in running.text


@pytest.fixture(scope="module")
def big_run(local_s3, tmp_path_factory):
    """Bucket gallery-many: run `many` of 2,500 grids (3 packs), and `huge`, a manifest of
    10,000,000 grids (its packs never read by the run page)."""
    from tests.plugins.conftest import publish_fake_run, tiny_png

    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-many")
    published = publish_fake_run(client, "gallery-many", tmp_path_factory.mktemp("many"), "many", run_id="many",
                                 logical_date="2026-01-01T00:00:00+00:00", grid_pngs=[tiny_png(g) for g in range(2500)])
    manifest = published["manifest"]
    root = manifest["root"].replace("runs/many/", "runs/huge/")
    packs = [{**manifest["packs"][0], "key": f"{root}/packs/pack_{first:08d}.tar", "first": first, "count": 2_500_000,
              "index": {**manifest["packs"][0]["index"], "key": f"{root}/packs/pack_{first:08d}.json"}}
             for first in range(0, 10_000_000, 2_500_000)]
    huge = {**manifest, "run_id": "huge", "root": root, "grids": 10_000_000, "packs": packs,
            "objects": [{**o, "key": o["key"].replace("runs/many/", "runs/huge/")} for o in manifest["objects"]]}
    client.put_object(Bucket="gallery-many", Key="runs/huge/manifest.json", Body=json.dumps(huge).encode())
    return published


def test_grid_pages_are_arithmetic(client, token, plugin, big_run, monkeypatch):
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-many")
    per = plugin.GRIDS_PER_PAGE
    pages = -(-2500 // per)
    first = client.get("/runs/many", headers=bearer(token)).text
    assert first.count("<img class=grid") == per and f"page 1 of {pages}" in first
    assert "2,500 grid(s) in 3 pack(s)" in first and 'src="/runs/many/grid/0"' in first
    assert 'href="/runs/many?page=2">next</a>' in first
    second = client.get("/runs/many?page=2", headers=bearer(token)).text
    assert second.count("<img class=grid") == per
    assert [int(g) for g in re.findall(r'<img class=grid src="/runs/many/grid/(\d+)"', second)] == \
        list(range(per, 2 * per))
    last = client.get(f"/runs/many?page={pages}", headers=bearer(token)).text
    shown = [int(g) for g in re.findall(r'<img class=grid src="/runs/many/grid/(\d+)"', last)]
    assert shown == list(range((pages - 1) * per, 2500)) and f"page {pages} of {pages}" in last
    assert client.get("/runs/many?page=999999", headers=bearer(token)).text == last  # past the end: the last page
    for grid in (0, 833, 834, 1667, 2499):  # each side of each pack boundary
        response = client.get(f"/runs/many/grid/{grid}", headers=bearer(token))
        assert response.status_code == 200 and response.content == big_run["grids"][grid], grid


def test_the_run_page_of_ten_million_grids_stays_small(client, token, big_run, monkeypatch):
    """The run page never lists a run's grids: a manifest of 10,000,000 grids renders any page in
    about the memory a 2,500-grid run's does."""
    import tracemalloc

    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-many")
    for path in ("/runs/many", "/runs/huge"):  # manifests cached, templates compiled
        assert client.get(path, headers=bearer(token)).status_code == 200
    peaks = {}
    for path in ("/runs/many?page=30", "/runs/huge?page=150000", "/runs/huge?page=208334"):
        tracemalloc.start()
        try:
            response = client.get(path, headers=bearer(token))
            peaks[path] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert response.status_code == 200, response.text
    page = client.get("/runs/huge?page=208334", headers=bearer(token)).text
    assert "10,000,000 grid(s) in 4 pack(s)" in page and "page 208334 of 208334" in page
    assert re.findall(r'<img class=grid src="/runs/huge/grid/(\d+)"', page) == [str(g) for g in
                                                                              range(9_999_984, 10_000_000)]
    assert max(peaks.values()) < 2_000_000, peaks  # about 150 KB; a list of 10,000,000 grids is > 80 MB
    assert peaks["/runs/huge?page=150000"] < peaks["/runs/many?page=30"] + 500_000, peaks


def test_grid_endpoint_serves_the_grid_from_its_pack(client, token, published):
    for g, png in enumerate(published["pngs"][NEW]["grids"]):
        response = client.get(f"/runs/{NEW}/grid/{g}", headers=bearer(token))
        assert response.status_code == 200 and response.content == png
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-length"] == str(len(png))
        assert response.headers["cache-control"] == "private, max-age=300"
        assert response.headers["etag"] == f'"{hashlib.sha256(png).hexdigest()}"'
        assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    etag = client.get(f"/runs/{NEW}/grid/1", headers=bearer(token)).headers["etag"]
    again = client.get(f"/runs/{NEW}/grid/1", headers={**bearer(token), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get(f"/runs/{NEW}/grid/2", headers={**bearer(token), "If-None-Match": etag})
    assert other.status_code == 200 and other.content == published["pngs"][NEW]["grids"][2]
    assert client.get(f"/runs/{NEW}/grid/1", headers={"If-None-Match": etag}).status_code == 401


def test_image_endpoint_streams_the_latency_plot(client, token, published):
    plot = client.get(f"/runs/{OLD}/img/perf/latency.png", headers=bearer(token))
    assert plot.status_code == 200 and plot.content == published["pngs"][OLD]["perf/latency.png"]
    assert plot.headers["content-type"] == "image/png"
    assert plot.headers["content-length"] == str(len(plot.content))
    assert plot.headers["cache-control"] == "private, max-age=300"


def test_damaged_packs_and_old_manifests_are_a_clear_502(client, token, local_s3, tmp_path, monkeypatch):
    from tests.plugins.conftest import publish_fake_run, tiny_png

    s3 = local_s3["client"]
    s3.create_bucket(Bucket="gallery-damaged")
    run = publish_fake_run(s3, "gallery-damaged", tmp_path, "d", run_id="d", logical_date="2026-01-01T00:00:00+00:00",
                           grid_pngs=[tiny_png(g) for g in range(4)], pack_grids=2)
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-damaged")
    assert client.get("/runs/d/grid/3", headers=bearer(token)).content == run["grids"][3]
    from cgan.layout.packs import PackIndex
    from cgan.publishing.gallery import DEFAULT_CACHE

    pack = run["manifest"]["packs"][1]
    member = PackIndex.from_json(s3.get_object(Bucket="gallery-damaged", Key=pack["index"]["key"])["Body"].read()
                                 ).member(3)
    body = bytearray(s3.get_object(Bucket="gallery-damaged", Key=pack["key"])["Body"].read())
    body[member.offset + 40] ^= 0xFF  # inside grid 3's PNG: same size, other bytes
    s3.put_object(Bucket="gallery-damaged", Key=pack["key"], Body=bytes(body))
    response = client.get("/runs/d/grid/3", headers={**bearer(token), **HTML})
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/html")
    assert "grid_00000003.png of pack_00000002.tar does not match its index (sha256)" in response.text
    assert not response.content.startswith(b"\x89PNG")
    assert client.get("/runs/d/grid/0", headers=bearer(token)).content == run["grids"][0]
    assert client.get("/runs/d/grid/2", headers=bearer(token)).content == run["grids"][2]
    s3.put_object(Bucket="gallery-damaged", Key=pack["index"]["key"], Body=b" " * pack["index"]["size"])
    DEFAULT_CACHE.clear()  # the index was cached by the requests above
    response = client.get("/runs/d/grid/2", headers=bearer(token))
    assert response.status_code == 502
    assert "does not match the manifest's size and sha256" in response.json()["detail"]
    v1 = {**run["manifest"], "version": 1}
    del v1["packs"]
    s3.put_object(Bucket="gallery-damaged", Key="runs/v1/manifest.json", Body=json.dumps(v1).encode())
    response = client.get("/runs/v1", headers={**bearer(token), **HTML})
    assert response.status_code == 502 and "lists no packs (version 1; this reader knows version 2)" in response.text
    assert "re-publish the run" in response.text
    index_page = client.get("/", headers=bearer(token)).text
    assert "runs/v1/ is not listed: the manifest of runs/v1 lists no packs" in index_page


@pytest.mark.parametrize("path", [
    f"/runs/{NEW}/img/perf/not_in_manifest.png",
    f"/runs/{NEW}/img/not_in_manifest.png",
    f"/runs/{NEW}/img/packs/pack_00000000.tar",
    f"/runs/{NEW}/img/grids/grid_00000000.png",
    f"/runs/{NEW}/img/perf%2F..%2F..%2F..%2Fprivate%2Fsecret.png",
    f"/runs/{NEW}/img/..%2F..%2Fprivate%2Fsecret.png",
    f"/runs/{NEW}/img/quality/quality.json",
    f"/runs/{NEW}/img/manifest.json",
    f"/runs/{NEW}/grid/4",  # the run has grids 0..3
    f"/runs/{NEW}/grid/99999999",
    f"/runs/{NEW}/grid/9999999999",
    f"/runs/{NEW}/grid/-1",
    f"/runs/{NEW}/grid/1.0",
    f"/runs/{NEW}/grid/%EF%BC%91",  # a fullwidth digit one
    f"/runs/{NEW}/grid/0x1",
    f"/runs/{OLD}/grid/3",  # another run's grid count
    "/runs/half-done/grid/0",
    "/runs/half-done/img/perf/latency.png",
    "/runs/half-done",
    "/runs/%2E%2E/img/private/secret.png",
    "/runs/%2E%2E/grid/0",
])
def test_objects_not_in_a_manifest_are_refused(client, token, path):
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 404, (path, response.status_code)
    assert not response.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/runs/%2E%2E", "/runs/a%20b", "/runs/a%3Bb/img/perf/latency.png",
                                  "/runs/a%3Bb/grid/0"])
def test_a_bad_run_name_is_not_found_and_says_what_a_run_name_is(client, token, path):
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 404, (path, response.status_code)
    assert "is not the name of a published run" in response.json()["detail"]


def test_hostile_run_id_is_escaped(client, token, monkeypatch):
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-hostile")
    for path in ("/", f"/runs/{HOSTILE}"):
        page = client.get(path, headers=bearer(token)).text
        assert HOSTILE_RUN_ID not in page and "<script" not in without_own_script(page)
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;b&gt;" in page


def test_store_problems_are_reported(client, token, monkeypatch):
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "no-such-bucket")
    response = client.get("/", headers={**bearer(token), **HTML})
    assert response.status_code == 502 and "NoSuchBucket" in response.text
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "Not_A_Bucket")
    response = client.get("/", headers=bearer(token))
    assert response.status_code == 503 and "CGAN_PUBLISH_BUCKET" in response.json()["detail"]
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery")
    # A connection that does not exist: the amazon provider falls back to boto3's own credential
    # chain (as the operators do); with none here the store refuses, and the page names the connection.
    monkeypatch.setenv("CGAN_S3_CONN_ID", "no_such_connection")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    response = client.get("/", headers=bearer(token))
    assert response.status_code == 502 and "'no_such_connection'" in response.json()["detail"]


def test_importing_the_plugin_is_light():
    """The scheduler and workers import every plugin file: no boto3, S3Hook or auth code then."""
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('cgan_gallery', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); "
            "heavy = [n for n in ('boto3', 'airflow.providers.amazon.aws.hooks.s3', 'cgan.publishing.gallery', "
            "'airflow.api_fastapi.core_api.security') if n in sys.modules]; print(json.dumps(heavy))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code, str(REPO / "plugins" / "cgan_gallery.py")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
