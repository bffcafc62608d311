"""Published runs on the real local S3 server (SeaweedFS), made by cgan.publishing.publish.publish_run
from a workspace holding grid packs (cgan.layout.packs): manifest version 2."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_FILE = REPO / "plugins" / "cgan_gallery.py"


def grid_png(seed: int) -> bytes:
    """A 280x280 grid PNG: column j a little brighter than column j-1, speckled by the seed."""
    from cgan.recipe.grids import grid_array, png_bytes

    rng = np.random.default_rng(seed)
    samples = rng.uniform(-1, 0, (100, 1, 28, 28)).astype(np.float32)
    samples += (np.arange(100) % 10).reshape(100, 1, 1, 1).astype(np.float32) / 10
    return png_bytes(grid_array(samples))


def run_params(grids: int, seed: int = 7, **given) -> dict:
    """The params the plan records in the manifest (cgan.run.plan.RunParams, the seed filled in):
    what the form left empty is null, as in a real run."""
    from cgan.run.plan import RunParams

    return dict(RunParams(num_grids=grids).as_dict(), seed=seed, **given)


def generator_grid_pngs(seed: int, count: int) -> list[bytes]:
    """Real digit grids: the committed generator on the seeded input bins (PyTorch, CPU)."""
    import torch

    from cgan.recipe.bins import make_input_batch
    from cgan.recipe.checkpoint import load_generator
    from cgan.recipe.grids import grid_array, png_bytes

    model = load_generator(REPO / "models" / "cgan_generator.pth")
    pngs = []
    with torch.no_grad():
        for g in range(count):
            batch = torch.from_numpy(make_input_batch(seed, g))
            pngs.append(png_bytes(grid_array(model(batch).numpy())))
    return pngs


def tiny_png(n: int) -> bytes:
    """A small PNG, its pixels telling n apart (big runs: thousands of grids in seconds)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (n % 256, (n // 256) % 256, (n // 65536) % 256)).save(out, format="PNG")
    return out.getvalue()


def write_workspace_packs(store, pngs: list[bytes], work_dir: Path, *, shards: int = 1,
                          pack_grids: int | None = None) -> dict:
    """The run's grids as packs in the workspace (cgan.layout.packs.PackWriter, keys packs/...) and
    the staged.json that postprocess writes for them: shards split the grids evenly, each shard's
    packs as cgan.layout.packs.pack_ranges cuts them. Returns staged.json."""
    import hashlib

    from cgan.layout.packs import PACK_GRIDS, PackWriter, index_key, pack_key, pack_ranges
    from cgan.layout.workspace import STAGED_KEY, STAGED_VERSION

    staged = []
    for shard, grids in enumerate(pack_ranges(0, len(pngs), -(-len(pngs) // shards))):
        entries = []
        for r in pack_ranges(grids.start, len(grids), pack_grids or PACK_GRIDS):
            writer = PackWriter(work_dir / f"pack_{r.start}.tar", r.start, len(r))
            for g in reversed(r):  # any order: the pack is in grid order
                writer.add(g, pngs[g])
            index = writer.finish()
            body = index.to_json()
            store.put_file(writer.path, pack_key(r.start))
            store.put_bytes(body, index_key(r.start))
            entries.append({"key": pack_key(r.start), "size": index.size, "sha256": index.sha256,
                            "first": r.start, "count": len(r),
                            "index": {"key": index_key(r.start), "size": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest()}})
        staged.append({"shard": shard, "bucket": None, "root": None, "packs": entries})
    doc = {"version": STAGED_VERSION, "shards": staged}
    store.put_bytes(json.dumps(doc).encode(), STAGED_KEY)
    return doc


def publish_fake_run(client, bucket: str, tmp_path: Path, name: str, *, run_id: str, logical_date: str,
                     grids: int = 3, grids_per_s: float = 10.0, label_accuracy: float = 0.9,
                     latency_ms_mean: float = 80.0, grid_pngs: list[bytes] | None = None,
                     latency_plot: bytes | None = None, gate_failures: list[str] | None = None,
                     shards: int = 1, pack_grids: int | None = None, params: dict | None = None,
                     gate=None) -> dict:
    """A run published exactly as the publish task does it (publish_run over a workspace whose
    postprocess left packs, staged.json, perf/ and quality/; manifest version 2). `params`: the
    manifest's params (default num_grids, seed 7, target cpu); `gate`: cgan.quality.gate.Thresholds
    to judge the run by as postprocess does (the verdict in quality.json, the summary's gate and
    gate_failures from it). Returns {"grids": [PNG of grid 0, 1, ...], "perf/latency.png": PNG,
    "manifest": the manifest}."""
    from PIL import Image

    from cgan.layout.published import manifest_key
    from cgan.publishing.publish import build_metadata, publish_run
    from cgan.storage.store import open_store

    store = open_store((tmp_path / f"ws-{name}").as_uri())
    if grid_pngs is None:
        grid_pngs = [grid_png(g + 100 * len(name)) for g in range(grids)]
    grids = len(grid_pngs)
    write_workspace_packs(store, grid_pngs, tmp_path / f"packs-{name}", shards=shards, pack_grids=pack_grids)
    perf = {"backend": "onnxruntime", "devices": ["cpu"], "batch": 100, "threads": 1, "shards": shards,
            "calls": grids, "grids": grids, "latency_ms": {"mean": latency_ms_mean, "median": latency_ms_mean - 1,
                                                           "p99": latency_ms_mean * 1.5, "min": 40.0, "max": 130.0},
            "grids_per_s": grids_per_s, "images_per_s": grids_per_s * 100,
            "notes": ["grids/s is per device, never multiplied by the number of devices"]}
    per_class = {str(d): round(min(1.0, label_accuracy + (d - 4.5) / 100), 3) for d in range(10)}
    quality = {"label_accuracy": label_accuracy, "per_class_accuracy": per_class, "parity_max_abs_err": 2e-6,
               "classifier_holdout_accuracy": 0.978, "grids": grids, "digits_judged": grids * 100,
               "parity_grids_checked": grids}
    if gate is not None:
        from cgan.quality.gate import evaluate, failures

        quality["feature_diversity"] = 0.8
        quality["gate"] = evaluate(quality, gate, target="cpu", precision_mode="force_fp16")
        gate_failures = failures(quality["gate"])
    store.put_bytes(json.dumps(perf).encode(), "perf/perf.json")
    store.put_bytes(json.dumps(quality).encode(), "quality/quality.json")
    plot = tmp_path / f"latency-{name}.png"
    if latency_plot:
        plot.write_bytes(latency_plot)
    else:
        Image.new("RGB", (320, 120), (200, 220, 255)).save(plot)
    store.put_file(plot, "perf/latency.png")
    summary = {"grids": grids, "label_accuracy": label_accuracy, "parity_max_abs_err": 2e-6,
               "grids_per_s": grids_per_s, "latency_ms_mean": latency_ms_mean, "backend": "onnxruntime"}
    if gate_failures is not None:  # the quality gate's verdict, as postprocess records it
        summary.update(gate="rejected" if gate_failures else "accepted", gate_failures=gate_failures)
    metadata = build_metadata(run_id=run_id, logical_date=logical_date,
                              params=params or {"num_grids": grids, "seed": 7, "target": "cpu"},
                              export={"onnx_sha256": "ab" * 32, "checkpoint_sha256": "cd" * 32}, convert=None,
                              postprocess=summary)
    publish_run(store, client, bucket, f"runs/{name}", metadata=metadata, log=lambda _: None,
                tmp_dir=tmp_path / f"tmp-{name}")
    manifest = json.loads(client.get_object(Bucket=bucket, Key=manifest_key(name))["Body"].read())
    return {"grids": grid_pngs, "perf/latency.png": plot.read_bytes(), "manifest": manifest}


OLD = "scheduled__2026-05-01T02-00-00-00-00"
NEW = "scheduled__2026-05-02T02-00-00-00-00"
HOSTILE = "manual__hostile"
HOSTILE_RUN_ID = '<script>alert("x")</script>&<b>'


@pytest.fixture(scope="session")
def published(local_s3, tmp_path_factory):
    """Bucket `gallery` with two published nightly runs, a half-published prefix (no manifest),
    objects beside the runs that no manifest lists, and (in `gallery-hostile`) a run whose
    run id is HTML."""
    from cgan.quality.gate import Thresholds

    client = local_s3["client"]
    tmp = tmp_path_factory.mktemp("published")
    client.create_bucket(Bucket="gallery")
    pngs = {
        OLD: publish_fake_run(client, "gallery", tmp, OLD, run_id="scheduled__2026-05-01T02:00:00+00:00",
                              logical_date="2026-05-01T02:00:00+00:00", grids_per_s=12.5, label_accuracy=0.91),
        NEW: publish_fake_run(client, "gallery", tmp, NEW, run_id="scheduled__2026-05-02T02:00:00+00:00",
                              logical_date="2026-05-02T02:00:00+00:00", grids=4, grids_per_s=15.0,
                              label_accuracy=0.95, params=run_params(4, seed=20260502020000), gate=Thresholds()),
    }
    png = grid_png(99)
    half_done = "runs/half-done/attempts/20260501T000000.000000Z-000000/packs/pack_00000000"  # no manifest
    client.put_object(Bucket="gallery", Key=f"{half_done}.tar", Body=png)
    client.put_object(Bucket="gallery", Key=f"{half_done}.json", Body=b"{}")
    root = pngs[NEW]["manifest"]["root"]  # in the published attempt, but listed by no manifest
    client.put_object(Bucket="gallery", Key=f"{root}/perf/not_in_manifest.png", Body=png)
    client.put_object(Bucket="gallery", Key=f"runs/{NEW}/not_in_manifest.png", Body=png)
    client.put_object(Bucket="gallery", Key="private/secret.png", Body=png)
    client.create_bucket(Bucket="gallery-hostile")
    publish_fake_run(client, "gallery-hostile", tmp, HOSTILE, run_id=HOSTILE_RUN_ID,
                     logical_date="2026-05-03T02:00:00+00:00", grids=1)
    return {"client": client, "bucket": "gallery", "pngs": pngs}


def without_own_script(page: str) -> str:
    """The page less the gallery's one script (static/cgan_gallery/airflow-links.js, inlined in its
    head once), which the caller then checks holds no script at all."""
    own = f"<script>{(REPO / 'plugins' / 'static' / 'cgan_gallery' / 'airflow-links.js').read_text()}</script>"
    assert page.count(own) == 1 and page.index(own) < page.index("</head>")
    return page.replace(own, "")


def load_plugin_module():
    """plugins/cgan_gallery.py imported the way Airflow does: a top-level module named by its stem."""
    if "cgan_gallery" in sys.modules:
        return sys.modules["cgan_gallery"]
    spec = importlib.util.spec_from_file_location("cgan_gallery", PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cgan_gallery"] = module
    spec.loader.exec_module(module)
    return module
