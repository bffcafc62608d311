"""The gallery plugin app (plugins/cgan_gallery.py) with FastAPI's TestClient.

Authentication is Airflow's own: the SimpleAuthManager of this process (its migrated SQLite DB
from the `airflow_home` fixture holds the revoked-token table), tokens issued by its POST
/auth/token endpoint. The published runs are on the real local S3 server.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from tests.airflow_stack import s3_connection
from tests.plugins.conftest import HOSTILE, HOSTILE_RUN_ID, NEW, OLD, REPO, load_plugin_module

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


PAGES = ["/", f"/runs/{NEW}", f"/runs/{NEW}/img/grids/grid_00000000.png"]


def test_plugin_declares_app_and_nav_view(plugin):
    spec = plugin.CganGalleryPlugin
    assert spec.fastapi_apps == [{"app": plugin.app, "url_prefix": "/cgan-gallery", "name": "CGAN gallery"}]
    (view,) = spec.external_views
    assert view["href"] == "/cgan-gallery/" and view["url_route"] == "cgan-gallery" and view["destination"] == "nav"


def test_every_route_requires_login(plugin):
    from fastapi.routing import APIRoute

    routes = [r for r in plugin.app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} == {"/", "/runs/{name}", "/runs/{name}/img/{rel:path}"}
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
    assert "<svg" in page and page.count("<circle") == 4  # 2 runs x (grids/s, label accuracy)
    for shown in ("15.00", "12.50", "95.0 %", "91.0 %", "80.00", "2.00e-06"):
        assert shown in page
    assert "<script" not in page


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
    for g in range(4):
        assert f'<img class=grid src="/runs/{NEW}/img/grids/grid_{g:08d}.png"' in page
    assert f'src="/runs/{NEW}/img/perf/latency.png"' in page
    assert "p99 120.00" in page and "images/s" in page and "1,500.0" in page
    assert "Label accuracy per digit" in page and "90.5 %" in page and "97.8 %" in page
    assert "num_grids" in page and "onnxruntime" in page


def test_grid_pages(client, token, local_s3, tmp_path, plugin, monkeypatch):
    from tests.plugins.conftest import publish_fake_run

    local_s3["client"].create_bucket(Bucket="gallery-many")
    publish_fake_run(local_s3["client"], "gallery-many", tmp_path, "many", run_id="many",
                     logical_date="2026-01-01T00:00:00+00:00", grids=plugin.GRIDS_PER_PAGE + 2)
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-many")
    first = client.get("/runs/many", headers=bearer(token)).text
    second = client.get("/runs/many?page=2", headers=bearer(token)).text
    assert first.count("<img class=grid") == plugin.GRIDS_PER_PAGE and "page 1 of 2" in first
    assert second.count("<img class=grid") == 2 and "grid_00000049.png" in second


def test_image_endpoint_streams_the_published_png(client, token, published):
    response = client.get(f"/runs/{NEW}/img/grids/grid_00000001.png", headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == published["pngs"][NEW]["grids/grid_00000001.png"]
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["cache-control"] == "private, max-age=300"
    plot = client.get(f"/runs/{OLD}/img/perf/latency.png", headers=bearer(token))
    assert plot.status_code == 200 and plot.content == published["pngs"][OLD]["perf/latency.png"]


@pytest.mark.parametrize("path", [
    f"/runs/{NEW}/img/grids/not_in_manifest.png",
    f"/runs/{NEW}/img/grids%2F..%2F..%2F..%2Fprivate%2Fsecret.png",
    f"/runs/{NEW}/img/..%2F..%2Fprivate%2Fsecret.png",
    f"/runs/{NEW}/img/quality/quality.json",
    f"/runs/{NEW}/img/manifest.json",
    "/runs/half-done/img/grids/grid_00000000.png",
    "/runs/half-done",
    "/runs/%2E%2E/img/private/secret.png",
])
def test_objects_not_in_a_manifest_are_refused(client, token, path):
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 404, (path, response.status_code)
    assert not response.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/runs/%2E%2E", "/runs/a%20b", "/runs/a%3Bb/img/grids/grid_00000000.png"])
def test_a_bad_run_name_is_not_found_and_says_what_a_run_name_is(client, token, path):
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 404, (path, response.status_code)
    assert "is not the name of a published run" in response.json()["detail"]


def test_hostile_run_id_is_escaped(client, token, monkeypatch):
    monkeypatch.setenv("CGAN_PUBLISH_BUCKET", "gallery-hostile")
    for path in ("/", f"/runs/{HOSTILE}"):
        page = client.get(path, headers=bearer(token)).text
        assert HOSTILE_RUN_ID not in page and "<script" not in page
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
