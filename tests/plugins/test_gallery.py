"""cgan/publishing/gallery.py against the real local S3 server: listing, one run, grids read from
their packs by ranged GETs (counted on the wire), the latency plot, trend."""

import hashlib
import json

import pytest

from cgan.layout.packs import PackIndex
from cgan.publishing.gallery import (
    PNG_SIGNATURE,
    GalleryError,
    ManifestCache,
    NotFound,
    StoreUnavailable,
    list_runs,
    load_run,
    open_grid,
    open_png,
    trend,
)
from tests.plugins.conftest import NEW, OLD, publish_fake_run, tiny_png


@pytest.fixture
def cache():
    return ManifestCache()


class Requests:
    """The HTTP requests a boto3 client sends (botocore's before-send hook): (operation, Range)."""

    def __init__(self, local_s3):
        import boto3

        self.client = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                                   aws_access_key_id=local_s3["access_key"],
                                   aws_secret_access_key=local_s3["secret_key"])
        self.sent: list[tuple[str, str | None]] = []
        self.client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, request, event_name, **_):
        rng = request.headers.get("Range")
        self.sent.append((event_name.rsplit(".", 1)[-1], rng.decode() if isinstance(rng, bytes) else rng))

    def take(self) -> list[tuple[str, str | None]]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def counted(local_s3):
    return Requests(local_s3)


def _index(client, bucket: str, pack: dict) -> PackIndex:
    return PackIndex.from_json(client.get_object(Bucket=bucket, Key=pack["index"]["key"])["Body"].read())


@pytest.fixture(scope="module")
def big(local_s3, tmp_path_factory):
    """Bucket `gallery-big`: run `big` of 2,500 grids in one shard, so in 3 packs (834 + 833 + 833)."""
    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-big")
    pngs = [tiny_png(g) for g in range(2500)]
    published = publish_fake_run(client, "gallery-big", tmp_path_factory.mktemp("big"), "big", run_id="big",
                                 logical_date="2026-02-01T00:00:00+00:00", grid_pngs=pngs)
    return {"client": client, "bucket": "gallery-big", "name": "big", **published}


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
    assert new.objects == 3 + 2  # perf.json, latency.png, quality.json + one pack and its index
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
    assert (run.grids, run.packs) == (4, 1)
    assert run.images == ["perf/latency.png"] and run.has_latency_plot
    assert run.perf["latency_ms"]["p99"] == 120.0 and run.perf["grids_per_s"] == 15.0
    assert run.quality["per_class_accuracy"]["0"] == 0.905 and run.quality["classifier_holdout_accuracy"] == 0.978
    assert "objects" not in run.manifest and "packs" not in run.manifest and run.manifest["params"]["num_grids"] == 4
    manifest = published["pngs"][NEW]["manifest"]
    assert manifest["version"] == 2 and manifest["grids"] == 4
    assert run.total_bytes == sum(o["size"] for o in manifest["objects"]) + sum(
        p["size"] + p["index"]["size"] for p in manifest["packs"])
    assert run.problems == []


def test_unpublished_or_unknown_run_is_not_found(published, cache):
    for name in ("half-done", "no-such-run", "..", "a/b", "<x>"):
        with pytest.raises(NotFound):
            load_run(published["client"], "gallery", name, cache=cache)
        with pytest.raises(NotFound):
            open_grid(published["client"], "gallery", name, 0, cache=cache)


def test_open_grid_reads_each_grid_from_its_pack(published, cache):
    client = published["client"]
    (pack,) = published["pngs"][NEW]["manifest"]["packs"]
    index = _index(client, "gallery", pack)
    for g, png in enumerate(published["pngs"][NEW]["grids"]):
        image = open_grid(client, "gallery", NEW, g, cache=cache)
        assert image.data == png and image.data.startswith(PNG_SIGNATURE) and image.grid == g
        assert hashlib.sha256(image.data).hexdigest() == index.member(g).sha256 == image.etag
    assert open_grid(client, "gallery", OLD, 2, cache=cache).data == published["pngs"][OLD]["grids"][2]


def test_a_grid_outside_the_run_is_not_found(published, cache):
    for grid in (4, 5, 10**8, -1, True, "0", 1.0):
        with pytest.raises(NotFound, match="has no grid"):
            open_grid(published["client"], "gallery", NEW, grid, cache=cache)


def test_one_ranged_get_per_grid_once_the_index_is_cached(big, counted, cache):
    """The manifest once (HEAD + GET), each pack's index once, then exactly one ranged GET a grid."""
    packs = big["manifest"]["packs"]
    assert [(p["first"], p["count"]) for p in packs] == [(0, 834), (834, 833), (1667, 833)]
    client = counted.client
    assert open_grid(client, big["bucket"], "big", 0, cache=cache).data == big["grids"][0]
    assert [op for op, _ in counted.take()] == ["HeadObject", "GetObject", "GetObject", "GetObject"]
    for grid in (833, 834, 1666, 1667, 2499, 1, 2000):
        image = open_grid(client, big["bucket"], "big", grid, cache=cache)
        pack = next(p for p in packs if p["first"] <= grid < p["first"] + p["count"])
        member = _index(big["client"], big["bucket"], pack).member(grid)
        assert image.data == big["grids"][grid] and hashlib.sha256(image.data).hexdigest() == member.sha256
    counted.take()
    for grid in (0, 833, 834, 1667, 2499):
        open_grid(client, big["bucket"], "big", grid, cache=cache)
        pack = next(p for p in packs if p["first"] <= grid < p["first"] + p["count"])
        member = _index(big["client"], big["bucket"], pack).member(grid)
        assert counted.take() == [("GetObject", f"bytes={member.offset}-{member.offset + member.size - 1}")]
    # An ETag the caller already has: nothing is read past the cached index.
    image = open_grid(client, big["bucket"], "big", 7, cache=cache,
                      if_none_match=hashlib.sha256(big["grids"][7]).hexdigest())
    assert image.not_modified and image.data == b"" and counted.take() == []
    with pytest.raises(NotFound, match=r"0\.\.2499"):
        open_grid(client, big["bucket"], "big", 2500, cache=cache)
    assert counted.take() == []


def test_the_big_run_is_a_count_not_a_list(big, cache):
    run = load_run(big["client"], big["bucket"], "big", cache=cache)
    assert (run.grids, run.packs) == (2500, 3) and run.summary.grids == 2500 and run.summary.objects == 3 + 6


def test_the_index_cache_is_bounded(big, counted):
    cache = ManifestCache(max_indexes=2)
    for grid in (0, 900, 2000):  # one grid of each pack
        open_grid(counted.client, big["bucket"], "big", grid, cache=cache)
    assert len(cache._indexes) == 2
    counted.take()
    open_grid(counted.client, big["bucket"], "big", 1, cache=cache)  # its index was dropped: read again
    assert [(op, rng is not None) for op, rng in counted.take()] == [("GetObject", False), ("GetObject", True)]
    open_grid(counted.client, big["bucket"], "big", 2001, cache=cache)  # still cached
    assert [op for op, _ in counted.take()] == ["GetObject"]
    assert len(cache._indexes) == 2


@pytest.fixture
def own_run(local_s3, tmp_path):
    """A run of 6 grids in 2 packs of its own, to damage."""
    client = local_s3["client"]
    bucket = f"gallery-damage-{tmp_path.name.lower().replace('_', '-')}"[:63].rstrip("-")
    client.create_bucket(Bucket=bucket)
    published = publish_fake_run(client, bucket, tmp_path, "r", run_id="r", logical_date="2026-03-01T00:00:00+00:00",
                                 grid_pngs=[tiny_png(g) for g in range(6)], pack_grids=3)
    return {"client": client, "bucket": bucket, **published}


def test_a_pack_replaced_by_other_bytes_of_the_same_size_is_refused(own_run, cache):
    client, bucket = own_run["client"], own_run["bucket"]
    first, second = own_run["manifest"]["packs"]
    assert open_grid(client, bucket, "r", 4, cache=cache).data == own_run["grids"][4]
    member = _index(client, bucket, second).member(4)
    body = bytearray(client.get_object(Bucket=bucket, Key=second["key"])["Body"].read())
    body[member.offset + member.size - 5] ^= 0xFF  # inside grid 4's PNG; the pack keeps its size
    client.put_object(Bucket=bucket, Key=second["key"], Body=bytes(body))
    with pytest.raises(GalleryError, match="does not match its index") as refused:
        open_grid(client, bucket, "r", 4, cache=cache)
    assert not isinstance(refused.value, NotFound) and second["key"] in str(refused.value)
    assert open_grid(client, bucket, "r", 3, cache=cache).data == own_run["grids"][3]  # the rest is intact
    assert open_grid(client, bucket, "r", 0, cache=cache).data == own_run["grids"][0]
    assert first["key"] != second["key"]


def test_an_index_that_does_not_match_the_manifest_is_refused(own_run, cache):
    client, bucket = own_run["client"], own_run["bucket"]
    first, _ = own_run["manifest"]["packs"]
    body = client.get_object(Bucket=bucket, Key=first["index"]["key"])["Body"].read()
    doc = json.loads(body)
    doc["members"][0][3] = hashlib.sha256(b"other").hexdigest()  # same length: same size, other sha256
    forged = json.dumps(doc, separators=(",", ":")).encode()
    assert len(forged) == len(body) and forged != body
    client.put_object(Bucket=bucket, Key=first["index"]["key"], Body=forged)
    with pytest.raises(GalleryError, match="does not match the manifest's size and sha256"):
        open_grid(client, bucket, "r", 0, cache=cache)
    assert open_grid(client, bucket, "r", 5, cache=cache).data == own_run["grids"][5]


def test_a_missing_pack_is_an_error_not_a_404(own_run, cache):
    client, bucket = own_run["client"], own_run["bucket"]
    _, second = own_run["manifest"]["packs"]
    client.delete_object(Bucket=bucket, Key=second["key"])
    with pytest.raises(GalleryError, match="listed in the manifest but missing") as refused:
        open_grid(client, bucket, "r", 3, cache=cache)
    assert not isinstance(refused.value, NotFound)


def test_open_png_serves_only_pngs_the_manifest_lists(published, cache):
    client = published["client"]
    root = published["pngs"][NEW]["manifest"]["root"]
    png = open_png(client, "gallery", NEW, "perf/latency.png", cache=cache)
    data = png.read()
    assert data.startswith(PNG_SIGNATURE) and data == published["pngs"][NEW]["perf/latency.png"]
    assert png.size == len(data) and png.key == f"{root}/perf/latency.png"
    assert open_png(client, "gallery", OLD, "perf/latency.png", cache=cache).read() == \
        published["pngs"][OLD]["perf/latency.png"]
    refused = [
        (NEW, "perf/not_in_manifest.png"),  # in the published attempt, but not listed
        (NEW, "not_in_manifest.png"),
        (NEW, "packs/pack_00000000.tar"),  # grids are served by number, from their pack
        (NEW, "packs/pack_00000000.json"),
        (NEW, "grids/grid_00000000.png"),  # the layout before packs
        (NEW, "../../private/secret.png"),  # traversal
        (NEW, "perf/../../../private/secret.png"),
        ("half-done", "perf/latency.png"),  # not published
        (NEW, "quality/quality.json"),  # listed, but not an image
        (NEW, "manifest.json"),
        ("..", "private/secret.png"),
    ]
    for name, key in refused:
        with pytest.raises(NotFound):
            open_png(client, "gallery", name, key, cache=cache)


def test_republished_run_is_read_again(local_s3, tmp_path, cache):
    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-republish")
    first = publish_fake_run(client, "gallery-republish", tmp_path, "r1", run_id="r1",
                             logical_date="2026-01-01T00:00:00+00:00", grids_per_s=1.0)
    assert list_runs(client, "gallery-republish", cache=cache).runs[0].grids_per_s == 1.0
    assert load_run(client, "gallery-republish", "r1", cache=cache).summary.grids_per_s == 1.0
    assert open_grid(client, "gallery-republish", "r1", 2, cache=cache).data == first["grids"][2]
    again = publish_fake_run(client, "gallery-republish", tmp_path / "again", "r1", run_id="r1",
                             logical_date="2026-01-01T00:00:00+00:00", grids_per_s=2.0,
                             grid_pngs=[tiny_png(g) for g in range(5)])
    assert list_runs(client, "gallery-republish", cache=cache).runs[0].grids_per_s == 2.0
    # Within its ttl the old manifest is trusted: its packs, kept by the re-publish, still serve it.
    assert open_grid(client, "gallery-republish", "r1", 2, cache=cache).data == first["grids"][2]
    for pack in first["manifest"]["packs"]:  # as the next publish removes them
        client.delete_objects(Bucket="gallery-republish", Delete={"Objects": [{"Key": pack["key"]}]})
    # Gone from the bucket: the manifest is read again, once, and the new run's grid served.
    assert open_grid(client, "gallery-republish", "r1", 2, cache=cache).data == again["grids"][2]
    cache.ttl_s = 0  # after the ttl the manifest's ETag is checked on every request
    assert load_run(client, "gallery-republish", "r1", cache=cache).grids == 5
    assert open_grid(client, "gallery-republish", "r1", 4, cache=cache).data == again["grids"][4]


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


def test_a_version_1_manifest_says_so_and_is_not_listed(local_s3, cache):
    """Runs published before packs (one object per grid, no `packs`): a clear message everywhere."""
    client = local_s3["client"]
    client.create_bucket(Bucket="gallery-v1")
    root = "runs/old/attempts/20260101T000000.000000Z-abcdef"
    png = PNG_SIGNATURE + b"v1"
    client.put_object(Bucket="gallery-v1", Key=f"{root}/grids/grid_000000.png", Body=png)
    client.put_object(Bucket="gallery-v1", Key=f"{root}/perf/latency.png", Body=png)
    objects = [{"key": f"{root}/grids/grid_000000.png", "size": len(png), "sha256": "x"},
               {"key": f"{root}/perf/latency.png", "size": len(png), "sha256": "x"}]
    v1 = {"run_id": "old", "version": 1, "root": root, "objects": objects, "summary": {"grids": 1}}
    client.put_object(Bucket="gallery-v1", Key="runs/old/manifest.json", Body=json.dumps(v1).encode())
    client.put_object(Bucket="gallery-v1", Key="runs/older/manifest.json",  # before attempts: no root either
                      Body=json.dumps({"run_id": "older", "objects": objects}).encode())
    for name in ("old", "older"):
        for call in (lambda n: load_run(client, "gallery-v1", n, cache=cache),
                     lambda n: open_grid(client, "gallery-v1", n, 0, cache=cache),
                     lambda n: open_png(client, "gallery-v1", n, "perf/latency.png", cache=cache)):
            with pytest.raises(GalleryError, match="lists no packs .* re-publish the run") as refused:
                call(name)
            assert not isinstance(refused.value, (NotFound, StoreUnavailable))
    listing = list_runs(client, "gallery-v1", cache=cache)
    assert listing.runs == [] and sorted(n for n, _ in listing.unreadable) == ["old", "older"]
    assert all("lists no packs" in why for _, why in listing.unreadable)


def test_hostile_manifests_are_refused(own_run):
    """Packs or a root outside the run's attempts, packs that do not cover 0..N-1, a grid count
    that is not the packs', an index swapped in: never followed, never a crash."""
    client, bucket = own_run["client"], own_run["bucket"]
    good = own_run["manifest"]
    first, second = good["packs"]
    client.put_object(Bucket=bucket, Key="private/pack.tar", Body=b"secret")
    cache = ManifestCache(ttl_s=0)  # each manifest below replaces the run's: read by its new ETag

    def publish(**changes) -> None:
        client.put_object(Bucket=bucket, Key="runs/r/manifest.json", Body=json.dumps({**good, **changes}).encode())

    def moved(pack: dict, run: str) -> dict:
        return {**pack, "key": pack["key"].replace("runs/r/", f"runs/{run}/"),
                "index": {**pack["index"], "key": pack["index"]["key"].replace("runs/r/", f"runs/{run}/")}}

    cases = [
        ({"packs": [{**first, "key": "private/pack.tar"}, second]}, "is not the pack of grid 0"),
        ({"packs": [moved(first, "x"), moved(second, "x")]}, "is not the pack of grid 0"),  # another run's
        ({"packs": [second]}, "is not the pack of grid 0"),
        ({"packs": [first, first]}, "is not the pack of grid 3"),
        ({"packs": [first, {**second, "count": 0}]}, "is not the pack of grid 3"),
        ({"packs": {"first": 0}}, "lists no packs"),
        ({"grids": 7}, "says 7 grids, its packs hold 6"),
        ({"root": "private"}, "names no attempt of the run as its root"),
    ]
    for changes, why in cases:
        publish(**changes)
        for call in (lambda: load_run(client, bucket, "r", cache=cache),
                     lambda: open_grid(client, bucket, "r", 0, cache=cache)):
            with pytest.raises(GalleryError, match=why) as refused:
                call()
            assert not isinstance(refused.value, NotFound), changes
        listing = list_runs(client, bucket, cache=cache)
        assert listing.runs == [] and why in listing.unreadable[0][1]
    # The other pack's index under this pack's entry: its own sha256 matches, its grids do not.
    publish(packs=[{**first, "index": second["index"]}, second])
    with pytest.raises(GalleryError, match=r"of grids 3\.\.5, expected 0\.\.2"):
        open_grid(client, bucket, "r", 0, cache=cache)
    publish()
    assert open_grid(client, bucket, "r", 0, cache=cache).data == own_run["grids"][0]


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
    first_panel = re.findall(r'<circle class=point cx="([\d.]+)"[^>]*fill="([^"]+)"[^>]*data-kind="(\w+)"', svg)[:3]
    xs = [float(x) for x, _, _ in first_panel]
    assert abs((xs[1] - xs[0]) / (xs[2] - xs[0]) - 0.1) < 0.01  # 1 day of 10: placed by time, not by index
    assert [(fill == "#fff", kind) for _, fill, kind in first_panel] == [(False, "nightly"), (True, "manual"),
                                                                       (False, "nightly")]


def test_locate_grid_says_where_a_grid_lives_from_the_index_alone(big, counted, cache):
    from cgan.publishing.gallery import locate_grid

    pack = big["manifest"]["packs"][1]  # grids 834..1666
    place = locate_grid(counted.client, big["bucket"], "big", 1000, cache=cache)
    index = _index(big["client"], big["bucket"], pack)
    member = index.member(1000)
    assert (place.pack_key, place.pack_first, place.pack_count, place.grids) == (pack["key"], 834, 833, 2500)
    assert (place.member, place.offset, place.size, place.sha256) == ("grid_00001000.png", member.offset,
                                                                       member.size, member.sha256)
    assert place.seed == 7 and place.summary.run_id == "big"
    assert [op for op, _ in counted.take()] == ["HeadObject", "GetObject", "GetObject"]  # manifest, index: no PNG
    locate_grid(counted.client, big["bucket"], "big", 1001, cache=cache)
    assert counted.take() == []  # both cached
    with pytest.raises(NotFound, match=r"has no grid 2500: its grids are numbered 0\.\.2499"):
        locate_grid(counted.client, big["bucket"], "big", 2500, cache=cache)


def test_param_rows_show_nulls_as_what_the_run_used():
    from cgan.publishing.gallery import ParamRow, param_rows

    params = {"num_grids": 100, "seed": 20260101020000, "gate_min_label_accuracy": None,
              "gate_min_class_accuracy": 0.8, "gate_min_diversity": None, "grids_per_shard": None, "devices": None,
              "keep_raw_outputs": False, "precision_mode": "force_fp16", "other": None, "list": [1, 2], "on": True}
    quality = {"gate": {"thresholds": {"min_label_accuracy": 0.9, "min_class_accuracy": 0.8, "min_diversity": 0.5}}}
    rows = param_rows(params, defaults={"num_grids": 100, "keep_raw_outputs": False, "gate_min_class_accuracy": None,
                                        "precision_mode": "force_fp16", "on": 1},
                      quality=quality, perf={"shards": 3, "devices": ["npu:0@a", "npu:1@a"]},
                      derived_seed=20260101020000)
    null = {"given": False}
    assert rows == [
        ParamRow("num_grids", "100", "default"), ParamRow("seed", "20260101020000", "derived from the logical date"),
        ParamRow("gate_min_label_accuracy", "default (0.90)", **null), ParamRow("gate_min_class_accuracy", "0.80"),
        ParamRow("gate_min_diversity", "default (0.50)", **null),
        ParamRow("grids_per_shard", "automatic (3 shards)", **null),
        ParamRow("devices", "any (ran on npu:0@a, npu:1@a)", **null), ParamRow("keep_raw_outputs", "no", "default"),
        ParamRow("precision_mode", "force_fp16", "default"), ParamRow("other", "default", **null),
        ParamRow("list", "1, 2"), ParamRow("on", "yes"),  # True is not the default 1
    ]
    # a run that recorded nothing more: the nulls still read as defaults, never as "null"
    assert [r.value for r in param_rows({"gate_min_diversity": None, "grids_per_shard": None, "devices": None})] == [
        "default", "automatic", "any"]
    assert param_rows({"gate_min_diversity": None}, quality={"gate": {"thresholds": {"min_diversity": "x"}}}) == [
        ParamRow("gate_min_diversity", "default", given=False)]


def test_gate_checks_read_the_verdict_and_skip_what_is_no_check():
    from cgan.publishing.gallery import GateCheck, gate_checks
    from cgan.quality.gate import Thresholds, evaluate

    report = {"label_accuracy": 0.95, "per_class_accuracy": {"3": 0.7, "4": 0.99}, "parity_max_abs_err": 2e-6,
              "feature_diversity": 0.8}
    checks = gate_checks({"gate": evaluate(report, Thresholds(), target="cpu", precision_mode="force_fp16")})
    assert checks == [GateCheck("label_accuracy", 0.95, ">=", 0.9, True),
                      GateCheck("class_accuracy (digit 3, the worst)", 0.7, ">=", 0.75, False),
                      GateCheck("parity_max_abs_err (cpu, fp32)", 2e-6, "<=", 1e-4, True),
                      GateCheck("feature_diversity (worst digit)", 0.8, ">=", 0.5, True)]
    assert gate_checks(None) == gate_checks({}) == gate_checks({"gate": "x"}) == []
    assert gate_checks({"gate": {"checks": [1, {"metric": 2}, {"metric": "m", "value": True, "op": "<"}]}}) == [
        GateCheck("m", None, "?", None, False)]


def _svg_texts(svg: str, cls: str) -> list[str]:
    import re

    return re.findall(rf'<text class={cls} [^>]*>([^<]*)</text>', svg)


def _point(name: str, day: int, grids_per_s: float, accuracy: float, status: str = "accepted"):
    from datetime import UTC, datetime

    from cgan.publishing.gallery import TrendPoint

    return TrendPoint(name, f"scheduled__2026-01-{day:02d}", f"2026-01-{day:02d}T02:00:00+00:00", grids_per_s,
                      accuracy, datetime(2026, 1, day, 2, tzinfo=UTC), "nightly", status)


def test_nice_ticks_are_round():
    from tests.plugins.conftest import load_plugin_module

    nice_ticks = load_plugin_module().nice_ticks
    assert nice_ticks(0, 16.8) == ([0, 5, 10, 15, 20], 0)
    assert nice_ticks(0, 1.1) == ([0, 0.5, 1, 1.5], 1)
    assert nice_ticks(95.5, 99.5) == ([95, 96, 97, 98, 99, 100], 0)
    assert nice_ticks(96.5, 98.5) == ([96.5, 97, 97.5, 98, 98.5], 1)
    assert nice_ticks(0, 1234) == ([0, 500, 1000, 1500], 0)
    assert nice_ticks(5, 5) == ([5, 5.25, 5.5, 5.75, 6], 2)  # an empty range still has an axis


def test_trend_of_one_run_is_a_number_on_round_ticks():
    from tests.plugins.conftest import load_plugin_module

    svg = str(load_plugin_module().trend_svg([_point("a", 1, 14.65, 0.975)]))
    assert _svg_texts(svg, "tick") == ["0", "5", "10", "15", "20", "95%", "96%", "97%", "98%", "99%", "100%"]
    assert _svg_texts(svg, "value") == ["14.65", "97.5%"]  # the point says its value
    assert svg.count("class=point") == 2 and "<polyline" not in svg


def test_trend_of_two_runs_marks_the_rejected_one():
    from tests.plugins.conftest import load_plugin_module

    svg = str(load_plugin_module().trend_svg([_point("a", 1, 14.2, 0.96), _point("b", 2, 3.1, 0.42, "rejected")]))
    assert _svg_texts(svg, "tick") == ["0", "5", "10", "15", "20", "20%", "40%", "60%", "80%", "100%"]
    assert _svg_texts(svg, "value") == ["14.20", "3.10", "96.0%", "42.0%"]
    assert svg.count('<circle class=point') == 2 and svg.count('data-status="rejected"') == 2  # one per panel
    assert svg.count('<path class=point d="M') == 2 and 'stroke="#dc2626"' in svg
    assert ">rejected by the quality gate</text>" in svg and ">manual run</text>" in svg  # the legend
    many = str(load_plugin_module().trend_svg([_point(str(d), d, 10 + d, 0.95) for d in range(1, 7)]))
    assert _svg_texts(many, "value") == ["16.00", "95.0%"]  # more runs: the newest is labelled


def test_trend_of_values_no_axis_can_show_leaves_them_out():
    from tests.plugins.conftest import load_plugin_module

    svg = str(load_plugin_module().trend_svg([_point("a", 1, float("inf"), 1e300), _point("b", 2, -3.0, float("nan")),
                                              _point("c", 3, 1e308, 0.9)]))
    assert svg.count("class=point") == 2  # b's grids/s and c's accuracy; no inf, nan or 1e308 on an axis
    assert "nan" not in svg and "inf" not in svg
