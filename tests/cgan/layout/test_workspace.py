"""cgan.layout.workspace: the one home of the workspace's keys, and the lifecycle helpers on both stores."""

import os
import re
import time

import pytest

from cgan.layout.packs import index_key, pack_key
from cgan.layout.workspace import (
    STAGED_KEY,
    bins_pack_key,
    check_not_published_area,
    expired_workspaces,
    output_key,
    outputs_prefix,
    published_shard_file_key,
    remove_workspace,
    render_key,
    workspace_uri,
)
from cgan.storage.keys import StoreError
from cgan.storage.store import open_store
from tests.airflow_stack import REPO


def test_keys():
    assert workspace_uri("file:///a/", "r1") == "file:///a/runs/r1"
    assert bins_pack_key(2) == "bins/shard_0002/inputs.pack"
    assert output_key(2, 42) == "outputs/shard_0002/grid_00000042_output_0.bin"
    assert render_key(0) == "outputs/shard_0000/render.json" and outputs_prefix(12) == "outputs/shard_0012"
    assert pack_key(7) == "packs/pack_00000007.tar" and index_key(7) == "packs/pack_00000007.json"
    assert STAGED_KEY == "staged.json"
    assert published_shard_file_key(1, "msame.log") == "perf/shard_0001.msame.log"
    with pytest.raises(StoreError, match="non-negative"):
        output_key(-1, 0)


# The published layout (packs, perf/, quality/ of a published run) is read by publish and the
# gallery: its keys live in cgan.layout.published, a pack's in cgan.layout.packs.
PUBLISHED_LAYOUT_READERS = {  # the published layout
    "cgan/publishing/publish.py", "cgan/publishing/gallery.py", "cgan/layout/published.py"}
LAYOUTS = {"cgan/layout/workspace.py", "cgan/layout/packs.py"}
SPELLING = re.compile(r"shard_\{|shard_%0?4d|[\"'/](model|bins|outputs|grids|packs|perf|quality|logs)/(?!s\b)")


def test_no_other_module_spells_a_workspace_key():
    """The workspace's key layout is spelled in cgan/layout/workspace.py (and a pack's keys in
    cgan/layout/packs.py) only."""
    assert SPELLING.search('key = "packs/pack_00000000.tar"') and SPELLING.search("f'{root}/packs/{name}'")
    hits = []
    for folder in ("cgan", "operators", "dags", "plugins", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name in LAYOUTS or name in PUBLISHED_LAYOUT_READERS:
                continue
            hits += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                     if SPELLING.search(line)]
    assert hits == []


def test_an_artifact_root_at_the_publish_bucket_root_is_refused():
    with pytest.raises(StoreError, match="would be the published runs"):
        check_not_published_area("s3://cgan/", "cgan")
    check_not_published_area("s3://cgan/artifacts", "cgan")
    check_not_published_area("s3://cgan-artifacts", "cgan")
    check_not_published_area("file:///var/cgan", "cgan")


def _age_local(root, run: str, days: float):
    then = time.time() - days * 86400
    for path in (root / "runs" / run).rglob("*"):
        os.utime(path, (then, then))


def test_expired_workspaces_and_removal_on_a_local_store(tmp_path):
    store = open_store(tmp_path.as_uri())
    for run in ("old", "young", "current"):
        store.put_bytes(b"x" * 10, f"runs/{run}/bins/shard_0000/grid_00000000.bin")
        store.put_bytes(b"y" * 5, f"runs/{run}/packs/pack_00000000.tar")
    store.put_bytes(b"m", "models/k/cgan.onnx")
    _age_local(tmp_path, "old", 8)
    _age_local(tmp_path, "current", 30)  # the running run's own workspace is never "expired"
    expired = expired_workspaces(store, now=time.time(), retention_days=7, keep="current")
    assert list(expired) == ["old"] and 7.9 < expired["old"] < 8.1
    assert remove_workspace(store, "old") == (2, 15)
    assert store.usage("runs") == (4, 30) and store.usage() == (5, 31)
    assert not store.list("runs/old")


def test_usage_folder_ages_and_removal_on_s3(local_s3):
    client = local_s3["client"]
    client.create_bucket(Bucket="ws-life")
    store = open_store("s3://ws-life/art", s3_client=client)
    store.put_bytes(b"a" * 7, "runs/r1/packs/pack_00000000.tar")
    store.put_bytes(b"b" * 3, "runs/r2/bins/shard_0000/grid_00000000.bin")
    store.put_bytes(b"c", "models/k/entry.json")
    client.put_object(Bucket="ws-life", Key="runs/r1/packs/pack_00000000.tar", Body=b"published, not ours")
    assert store.usage() == (3, 11) and store.usage("runs") == (2, 10)
    ages = store.folder_ages("runs")
    assert set(ages) == {"r1", "r2"} and all(abs(time.time() - t) < 120 for t in ages.values())
    assert expired_workspaces(store, now=time.time() + 8 * 86400, retention_days=7) == pytest.approx(
        {"r1": 8.0, "r2": 8.0}, abs=0.01)
    assert remove_workspace(store, "r1") == (1, 7)
    assert store.list("runs") == ["runs/r2/bins/shard_0000/grid_00000000.bin"]
    # outside the store's prefix nothing is touched
    body = client.get_object(Bucket="ws-life", Key="runs/r1/packs/pack_00000000.tar")["Body"].read()
    assert body == b"published, not ours"
