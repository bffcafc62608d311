"""cgan/publishing/gallery.py against the real local S3 server: listing, one run, images, trend."""

import pytest

from cgan.publishing.gallery import (
    PNG_SIGNATURE,
    ManifestCache,
    NotFound,
    StoreUnavailable,
    list_runs,
    load_run,
    open_png,
    trend,
)
from tests.plugins.conftest import NEW, OLD, publish_fake_run


@pytest.fixture
def cache():
    return ManifestCache()


def test_lists_published_runs_newest_first_and_skips_prefixes_without_manifest(published, cache):
    listing = list_runs(published["client"], "gallery", cache=cache)
    assert [r.name for r in listing.runs] == [NEW, OLD]
    assert listing.unpublished == ["half-done"]
    assert listing.unreadable == [] and not listing.more_runs and not listing.more_prefixes
    new = listing.runs[0]
    assert new.run_id == "scheduled__2026-05-02T02:00:00+00:00"
    assert new.logical_date == "2026-05-02T02:00:00+00:00"
    assert (new.grids, new.grids_per_s, new.label_accuracy, new.latency_ms_mean) == (4, 15.0, 0.95, 80.0)
    assert new.parity_max_abs_err == 2e-6 and new.backend == "onnxruntime" and new.target == "cpu"
    assert new.objects == 4 + 3  # grids + perf.json, latency.png, quality.json
    assert new.published_at and new.manifest_key == f"runs/{NEW}/manifest.json"


def test_list_is_capped(published, cache):
    listing = list_runs(published["client"], "gallery", limit=1, cache=cache)
    assert [r.name for r in listing.runs] == [NEW] and listing.more_runs
    listing = list_runs(published["client"], "gallery", max_scan=1, cache=cache)
    assert listing.scanned == 1 and listing.more_prefixes


def test_trend_is_oldest_first(published, cache):
    points = trend(list_runs(published["client"], "gallery", cache=cache).runs)
    assert [(p.name, p.grids_per_s, p.label_accuracy) for p in points] == [(OLD, 12.5, 0.91), (NEW, 15.0, 0.95)]


def test_load_run(published, cache):
    run = load_run(published["client"], "gallery", NEW, cache=cache)
    assert run.grids == [f"grids/grid_{g:08d}.png" for g in range(4)]
    assert run.has_latency_plot and "perf/latency.png" in run.images
    assert run.perf["latency_ms"]["p99"] == 120.0 and run.perf["grids_per_s"] == 15.0
    assert run.quality["per_class_accuracy"]["0"] == 0.905 and run.quality["classifier_holdout_accuracy"] == 0.978
    assert "objects" not in run.manifest and run.manifest["params"]["num_grids"] == 4
    assert run.problems == [] and run.total_bytes > 0


def test_unpublished_or_unknown_run_is_not_found(published, cache):
    for name in ("half-done", "no-such-run", "..", "a/b", "<x>"):
        with pytest.raises(NotFound):
            load_run(published["client"], "gallery", name, cache=cache)


def test_open_png_serves_only_keys_of_the_manifest(published, cache):
    client = published["client"]
    png = open_png(client, "gallery", NEW, "grids/grid_00000002.png", cache=cache)
    data = png.read()
    assert data.startswith(PNG_SIGNATURE) and data == published["pngs"][NEW]["grids/grid_00000002.png"]
    assert png.size == len(data)
    assert open_png(client, "gallery", OLD, "perf/latency.png", cache=cache).read() == \
        published["pngs"][OLD]["perf/latency.png"]
    refused = [
        (NEW, "grids/not_in_manifest.png"),  # in the run's prefix, but not listed
        (NEW, "../../private/secret.png"),  # traversal
        (NEW, "grids/../../../private/secret.png"),
        ("half-done", "grids/grid_00000000.png"),  # not published
        (NEW, "quality/quality.json"),  # listed, but not an image
        (NEW, "manifest.json"),
        (OLD, "grids/grid_00000003.png"),  # another run's grid
        ("..", "private/secret.png"),
    ]
    for name, key in refused:
        with pytest.raises(NotFound):
            open_png(client, "gallery", name, key, cache=cache)


def test_republished_run_is_read_again(local_s3, tmp_path, cache):
    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-republish")
    publish_fake_run(client, "gallery-republish", tmp_path, "r1", run_id="r1", logical_date="2026-01-01T00:00:00+00:00",
                     grids_per_s=1.0)
    assert list_runs(client, "gallery-republish", cache=cache).runs[0].grids_per_s == 1.0
    assert load_run(client, "gallery-republish", "r1", cache=cache).summary.grids_per_s == 1.0
    publish_fake_run(client, "gallery-republish", tmp_path / "again", "r1", run_id="r1",
                     logical_date="2026-01-01T00:00:00+00:00", grids_per_s=2.0, grids=5)
    assert list_runs(client, "gallery-republish", cache=cache).runs[0].grids_per_s == 2.0
    cache.ttl_s = 0  # the object map is trusted for ttl_s; after it, the manifest's ETag is checked
    assert load_run(client, "gallery-republish", "r1", cache=cache).grids[-1] == "grids/grid_00000004.png"
    assert open_png(client, "gallery-republish", "r1", "grids/grid_00000004.png", cache=cache).read()[:8] == PNG_SIGNATURE


def test_missing_bucket_is_reported(local_s3, cache):
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        list_runs(local_s3["client"], "no-such-bucket", cache=cache)


def test_unreadable_manifest_is_reported_not_listed(local_s3, cache):
    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-broken")
    client.put_object(Bucket="gallery-broken", Key="runs/broken/manifest.json", Body=b"{not json")
    listing = list_runs(client, "gallery-broken", cache=cache)
    assert listing.runs == [] and listing.unreadable[0][0] == "broken"
    assert "not valid JSON" in listing.unreadable[0][1]


def test_runs_published_before_attempts_and_hostile_roots(local_s3, tmp_path, cache):
    """A manifest without `root` (runs published before attempts existed) has its objects right
    under runs/<name>/; a `root` outside the run's attempts is not followed."""
    import json

    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-legacy")
    png = PNG_SIGNATURE + b"legacy"
    client.put_object(Bucket="gallery-legacy", Key="runs/old/grids/grid_00000000.png", Body=png)
    client.put_object(Bucket="gallery-legacy", Key="private/grids/grid_00000000.png", Body=png + b"secret")
    objects = [{"key": "runs/old/grids/grid_00000000.png", "size": len(png), "sha256": "x"}]
    client.put_object(Bucket="gallery-legacy", Key="runs/old/manifest.json",
                      Body=json.dumps({"run_id": "old", "objects": objects}).encode())
    assert load_run(client, "gallery-legacy", "old", cache=cache).grids == ["grids/grid_00000000.png"]
    assert open_png(client, "gallery-legacy", "old", "grids/grid_00000000.png", cache=cache).read() == png
    hostile = {"run_id": "evil", "root": "private",
               "objects": [{"key": "private/grids/grid_00000000.png", "size": len(png) + 6, "sha256": "x"}]}
    client.put_object(Bucket="gallery-legacy", Key="runs/evil/manifest.json", Body=json.dumps(hostile).encode())
    assert load_run(client, "gallery-legacy", "evil", cache=cache).grids == []
    with pytest.raises(NotFound):
        open_png(client, "gallery-legacy", "evil", "grids/grid_00000000.png", cache=cache)


def test_a_rejected_run_is_listed_as_rejected_with_what_it_missed(local_s3, tmp_path, cache):
    from tests.plugins.conftest import load_plugin_module

    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-gate")
    publish_fake_run(client, "gallery-gate", tmp_path, "ok", run_id="ok", logical_date="2026-01-01T00:00:00+00:00",
                     gate_failures=[])
    publish_fake_run(client, "gallery-gate", tmp_path, "bad", run_id="bad", logical_date="2026-01-02T00:00:00+00:00",
                     gate_failures=["label_accuracy = 0.1 (needs >= 0.9)"])
    runs = {r.name: r for r in list_runs(client, "gallery-gate", cache=cache).runs}
    assert runs["ok"].status == "accepted" and runs["bad"].status == "rejected"
    assert runs["bad"].gate_failures == ("label_accuracy = 0.1 (needs >= 0.9)",)
    plugin = load_plugin_module()
    assert plugin._gate_html(runs["ok"]) == "accepted"
    assert ">rejected<" in plugin._gate_html(runs["bad"]) and "needs &gt;= 0.9" in plugin._gate_html(runs["bad"])


def test_trend_is_on_a_time_axis_and_tells_nightly_from_manual(local_s3, tmp_path, cache):
    import re

    from tests.plugins.conftest import load_plugin_module

    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-time")
    for name, run_id, day in (("n1", "scheduled__2026-01-01T02:00:00+00:00", "01"),
                              ("m1", "manual__2026-01-02T09:00:00+00:00", "02"),
                              ("n2", "scheduled__2026-01-11T02:00:00+00:00", "11")):
        publish_fake_run(client, "gallery-time", tmp_path, name, run_id=run_id,
                         logical_date=f"2026-01-{day}T02:00:00+00:00")
    runs = list_runs(client, "gallery-time", cache=cache).runs
    points = trend(runs)
    assert [(p.name, p.kind) for p in points] == [("n1", "nightly"), ("m1", "manual"), ("n2", "nightly")]
    assert [p.name for p in trend(runs, "nightly")] == ["n1", "n2"]
    assert [p.name for p in trend(runs, "manual")] == ["m1"]
    svg = load_plugin_module().trend_svg(points)
    first_panel = re.findall(r'<circle cx="([\d.]+)"[^>]*fill="([^"]+)"[^>]*data-kind="(\w+)"', svg)[:3]
    xs = [float(x) for x, _, _ in first_panel]
    assert abs((xs[1] - xs[0]) / (xs[2] - xs[0]) - 0.1) < 0.01  # 1 day of 10: placed by time, not by index
    assert [(fill == "#fff", kind) for _, fill, kind in first_panel] == [(False, "nightly"), (True, "manual"),
                                                                       (False, "nightly")]
