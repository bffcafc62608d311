"""The gallery's pages as its Jinja2 templates render them (plugins/templates/cgan_gallery/):
whatever a run, its files or the store say comes out escaped (autoescape), in text, in attributes
and in URLs; the stylesheet (plugins/static/cgan_gallery/gallery.css) and the one script
(airflow-links.js) are inlined byte for byte and the CSP allows exactly them, by their hashes.

The store and the login are stand-ins here (a fake `_store_call`, an override of `require_user`),
so what is tested is the rendering alone; test_cgan_gallery_plugin.py runs the same pages on the
real local S3 server with Airflow's own login.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from fastapi import Request

from tests.plugins.conftest import REPO, load_plugin_module, without_own_script

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
SCRIPT_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ATTR_ESCAPED = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"
HOSTILE_NAME = f"manual__{ATTR}"  # a prefix under runs/ can be named anything: the index links to it
QUOTED_NAME = "manual__a+b=c@d"  # a run name the publish task may write, its URL quoted
HTML = {"Accept": "text/html"}


def _summary(name: str, **fields):
    from cgan.publishing.gallery import RunSummary

    values = dict(name=name, run_id=f"manual__{SCRIPT}{ATTR}", logical_date=ATTR, published_at=SCRIPT, grids=2,
                  grids_per_s=12.5, latency_ms_mean=80.0, label_accuracy=0.9, parity_max_abs_err=2e-6,
                  backend=SCRIPT, target=ATTR, objects=4, status="rejected", gate_failures=(ATTR, SCRIPT))
    values.update(fields)
    return RunSummary(**values)


@pytest.fixture
def gallery(monkeypatch):
    """The plugin app on a fake store whose every string is HTML, logged in; yields a TestClient."""
    from fastapi import HTTPException
    from fastapi.testclient import TestClient

    from cgan.publishing.gallery import GridPlace, RunDetail, RunList

    plugin = load_plugin_module()
    run = RunDetail(
        summary=_summary("manual__hostile"),
        manifest={"params": {SCRIPT: ATTR, "nested": {ATTR: [SCRIPT]}, "gate_min_label_accuracy": None,
                             "devices": None},
                  "model": {"name": SCRIPT}},
        grids=2, packs=1, images=["perf/latency.png"],
        perf={"backend": SCRIPT, "devices": [ATTR, "cpu"], "latency_ms": {"mean": 1.0}, "notes": [SCRIPT, ATTR]},
        quality={"label_accuracy": 0.9, "per_class_accuracy": {SCRIPT: 0.5, ATTR: 0.25},
                 "gate": {"thresholds": {"min_label_accuracy": ATTR},
                          "checks": [{"metric": SCRIPT, "value": 0.5, "op": ">=", "threshold": 0.9, "passed": False,
                                      "why": ATTR}, {"metric": ATTR, "value": SCRIPT, "op": SCRIPT}]}},
        total_bytes=10, problems=[ATTR, SCRIPT])
    place = GridPlace(summary=run.summary, grid=1, grids=2, seed=None, pack_key=f"runs/{ATTR}/{SCRIPT}.tar",
                      pack_first=0, pack_count=2, member=f"{SCRIPT}.png", offset=512, size=100, sha256=ATTR)
    quoted = RunDetail(summary=_summary(QUOTED_NAME), manifest={}, grids=3, packs=1, images=[], perf=None,
                       quality=None, total_bytes=1)
    listing = RunList(runs=[run.summary, _summary(HOSTILE_NAME, run_id=ATTR, status="accepted")],
                      unpublished=[SCRIPT], unreadable=[(ATTR, SCRIPT)], scanned=3, more_runs=True,
                      more_prefixes=False)

    def store_call(fn, *args, **kwargs):
        if fn.__name__ == "list_runs":
            return listing
        if fn.__name__ == "load_run" and args == ("manual__hostile",):
            return run
        if fn.__name__ == "load_run" and args == (QUOTED_NAME,):
            return quoted
        if fn.__name__ == "locate_grid" and args == ("manual__hostile", 1):
            return place
        raise HTTPException(404, f"no such run {args[0]!r}: {SCRIPT}")

    def login(request: Request):  # a request may ask to be refused, to get the error pages
        status = request.headers.get("x-refuse")
        if status:
            raise HTTPException(int(status), f"refused {ATTR}")

    monkeypatch.setattr(plugin, "_store_call", store_call)
    monkeypatch.setattr(plugin, "_bucket", lambda: f"bucket{ATTR}")
    monkeypatch.setattr(plugin, "_login_url", lambda: f"/auth/login?next=%2Fplugin&x={ATTR}")
    monkeypatch.setitem(plugin.app.dependency_overrides, plugin.require_user, login)
    with TestClient(plugin.app) as client:
        yield client


class _Elements(HTMLParser):
    """The elements of a page: (tag, {attribute: value})."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def _assert_nothing_injected(page: str) -> None:
    """No markup of the data's: no script (but the gallery's own), no event handler, no image the
    gallery did not put there."""
    page = without_own_script(page)
    assert "<script" not in page and "<img src=x" not in page and "onerror=alert(1)>" not in page
    for tag, attrs in _Elements(page).elements:
        assert tag != "script", attrs
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs.get("class") in ("grid", "plot", "zoomed"), attrs
            assert (attrs.get("src") or "").startswith("/runs/"), attrs


PAGES = [("/", {}), ("/?kind=manual", {}), ("/runs/manual__hostile", {}), (f"/runs/{quote(QUOTED_NAME, safe='')}", {}),
         ("/runs/manual__hostile/zoom/1", {}), ("/runs/nope", HTML),
         (f"/dags/cgan_generation/runs/{quote(SCRIPT + ATTR, safe='')}", HTML),
         (f"/dags/{quote(ATTR, safe='')}/runs/x", HTML),
         ("/", {"x-refuse": "401", **HTML}), ("/", {"x-refuse": "403", **HTML})]


@pytest.mark.parametrize(("path", "headers"), PAGES)
def test_html_in_the_data_comes_out_escaped(gallery, path, headers):
    response = gallery.get(path, headers=headers)
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    _assert_nothing_injected(page)
    assert SCRIPT_ESCAPED in page or ATTR_ESCAPED in page


def test_every_hostile_field_of_the_index_is_escaped(gallery):
    page = gallery.get("/").text
    assert f"<code>s3://bucket{ATTR_ESCAPED}/runs/</code>" in page
    assert f">manual__{SCRIPT_ESCAPED}{ATTR_ESCAPED}</a>" in page  # run id
    assert f'<span title="{ATTR_ESCAPED}">{ATTR_ESCAPED}</span>' in page  # a logical date that is no date
    assert f"<td>{ATTR_ESCAPED}, {SCRIPT_ESCAPED}</td>" in page  # target, backend
    assert f'<span class=warn title="{ATTR_ESCAPED}; {SCRIPT_ESCAPED}">rejected</span>' in page
    assert f'href="/runs/{quote(HOSTILE_NAME, safe="")}"' in page  # the name is quoted in the URL
    assert f"runs/{ATTR_ESCAPED}/ is not listed: {SCRIPT_ESCAPED}" in page
    assert f"<title>manual run manual__{SCRIPT_ESCAPED}{ATTR_ESCAPED} ({ATTR_ESCAPED}), rejected by the quality " \
           "gate: " in page  # a trend point


def test_every_hostile_field_of_a_run_page_is_escaped(gallery):
    page = gallery.get("/runs/manual__hostile").text
    assert f"<title>manual__{SCRIPT_ESCAPED}{ATTR_ESCAPED}: CGAN gallery</title>" in page
    assert f"<p class=warn>{ATTR_ESCAPED}</p>" in page and f"<p class=warn>{SCRIPT_ESCAPED}</p>" in page
    assert f"does not name it. {ATTR_ESCAPED}; {SCRIPT_ESCAPED}</p>" in page
    assert "2 grid(s) in 1 pack(s)" in page
    for g in range(2):
        grid = f"/runs/manual__hostile/grid/{g}"
        assert f'<a href="/runs/manual__hostile/zoom/{g}"><img class=grid src="{grid}" alt="grid_{g:08d}"' in page
        assert f"<figcaption>grid_{g:08d}</figcaption>" in page
    assert 'src="/runs/manual__hostile/img/perf/latency.png"' in page
    assert f"<th>backend</th><td>{SCRIPT_ESCAPED}</td>" in page
    assert f"<th>devices</th><td>{ATTR_ESCAPED}, cpu</td>" in page
    assert f"<li>{SCRIPT_ESCAPED}</li>" in page and f"<li>{ATTR_ESCAPED}</li>" in page
    assert f"<tr><td>{SCRIPT_ESCAPED}</td><td class=n>50.0 %</td>" in page  # a digit that is not a digit
    assert f"<th>{SCRIPT_ESCAPED}</th><td><code>{ATTR_ESCAPED}</code></td>" in page  # params
    assert "<code>{&quot;\\&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&quot;: " in page  # nested: as JSON
    assert f"<th>name</th><td><code>{SCRIPT_ESCAPED}</code></td>" in page  # model
    assert "<th>gate_min_label_accuracy</th><td>default</td>" in page  # a threshold that is no number
    assert f"<th>devices</th><td>any (ran on {ATTR_ESCAPED}, cpu)</td>" in page
    assert f"<tr class=failed><td>{SCRIPT_ESCAPED}</td><td class=n>0.5</td><td class=n>≥ 0.9</td><td>failed: " \
           f"{ATTR_ESCAPED}</td></tr>" in page  # a gate check
    assert f"<tr class=failed><td>{ATTR_ESCAPED}</td><td class=n>&mdash;</td><td class=n>? &mdash;</td>" in page
    run_id = quote(f"manual__{SCRIPT}{ATTR}", safe="")
    assert f'<a href="/dags/cgan_generation/runs/{run_id}" data-airflow>DAG run</a>' in page
    publish = f"/dags/cgan_generation/runs/{run_id}/tasks/publish"
    assert f'<a href="{publish}" data-airflow title="publish">publish</a>' in page


def test_every_hostile_field_of_a_grid_page_is_escaped(gallery):
    page = gallery.get("/runs/manual__hostile/zoom/1").text
    assert f"<title>grid_00000001 of manual__{SCRIPT_ESCAPED}{ATTR_ESCAPED}: CGAN gallery</title>" in page
    assert f"<code>s3://bucket{ATTR_ESCAPED}/runs/{ATTR_ESCAPED}/{SCRIPT_ESCAPED}.tar</code>" in page
    assert f"tar -xO {SCRIPT_ESCAPED}.png &gt; {SCRIPT_ESCAPED}.png</code>" in page
    assert f"<th>sha256</th><td><code>{ATTR_ESCAPED}</code></td>" in page
    assert "&mdash; (the manifest records no seed)" in page
    assert '<img class=zoomed src="/runs/manual__hostile/grid/1" width="560" height="560"' in page


def test_the_dag_run_tab_escapes_what_the_url_says(gallery):
    page = gallery.get(f"/dags/cgan_generation/runs/{quote(SCRIPT + ATTR, safe='')}", headers=HTML).text
    assert f"Run &#x27;{SCRIPT_ESCAPED}{ATTR_ESCAPED}&#x27; of cgan_generation is not published (yet)" in page


def test_grid_urls_quote_the_run_name(gallery):
    page = gallery.get(f"/runs/{quote(QUOTED_NAME, safe='')}").text
    for g in range(3):
        grid = f"/runs/{quote(QUOTED_NAME, safe='')}/grid/{g}"
        assert "%2B" in grid and "%40" in grid
        assert f'<a href="{grid.replace("/grid/", "/zoom/")}"><img class=grid src="{grid}" alt="grid_{g:08d}"' in page
    assert page.count("<img class=grid") == 3 and "No perf.json in this run." in page


def test_error_pages_escape_the_detail_and_the_sign_in_link(gallery):
    page = gallery.get("/runs/nope", headers=HTML).text
    assert f"<p>no such run &#x27;nope&#x27;: {SCRIPT_ESCAPED}</p>" in page
    assert '<p><a href="/">Published runs</a></p>' in page
    page = gallery.get("/", headers={"x-refuse": "401", **HTML}).text
    assert f"<p>refused {ATTR_ESCAPED}</p>" in page
    assert f'<a href="/auth/login?next=%2Fplugin&amp;x={ATTR_ESCAPED}" target="_top">Sign in to Airflow</a>' in page


@pytest.mark.parametrize(("path", "headers"), PAGES)
def test_the_inlined_stylesheet_and_script_are_the_static_files_and_the_csp_allows_only_them(gallery, path,
                                                                                            headers):
    response = gallery.get(path, headers=headers)
    (style,) = re.findall(r"<style>(.*?)</style>", response.text, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    assert style.encode() == (REPO / "plugins" / "static" / "cgan_gallery" / "gallery.css").read_bytes()
    assert script.encode() == (REPO / "plugins" / "static" / "cgan_gallery" / "airflow-links.js").read_bytes()
    css, js = (base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() for text in (style, script))
    csp = response.headers["content-security-policy"]
    assert csp == (f"default-src 'none'; img-src 'self'; style-src 'sha256-{css}'; script-src 'sha256-{js}'; "
                   "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"


def test_templates_autoescape_every_value():
    plugin = load_plugin_module()
    assert plugin.templates.autoescape is True
    rendered = plugin.templates.from_string("<p title='{{ v }}'>{{ v }}</p>").render(v=f"{SCRIPT}'")
    assert rendered == f"<p title='{SCRIPT_ESCAPED}&#x27;'>{SCRIPT_ESCAPED}&#x27;</p>"


@pytest.mark.slow
def test_templates_and_stylesheet_are_found_next_to_the_plugin(tmp_path):
    """Airflow imports the plugin from its plugins folder (in the images /opt/cgan/plugins): a copy of
    plugins/ elsewhere renders from its own templates/ and static/."""
    plugins = tmp_path / "plugins"
    shutil.copytree(REPO / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('cgan_gallery', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); "
            "print(m.TEMPLATES_DIR); print(m.CSS_FILE); print(m.templates.get_template('base.html').filename)")
    out = subprocess.run([sys.executable, "-c", code, str(plugins / "cgan_gallery.py")], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(plugins / "templates" / "cgan_gallery"),
                                  str(plugins / "static" / "cgan_gallery" / "gallery.css"),
                                  str(plugins / "templates" / "cgan_gallery" / "base.html")]
