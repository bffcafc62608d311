"""Published runs on the real local S3 server (SeaweedFS), made by cgan.publishing.publish.publish_run."""

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


def publish_fake_run(client, bucket: str, tmp_path: Path, name: str, *, run_id: str, logical_date: str,
                     grids: int = 3, grids_per_s: float = 10.0, label_accuracy: float = 0.9,
                     latency_ms_mean: float = 80.0, grid_pngs: list[bytes] | None = None,
                     latency_plot: bytes | None = None, gate_failures: list[str] | None = None) -> dict:
    """A run published exactly as the publish task does it (publish_run: objects, then manifest)."""
    from PIL import Image

    from cgan.publishing.publish import build_metadata, publish_run
    from cgan.storage.store import open_store

    store = open_store((tmp_path / f"ws-{name}").as_uri())
    pngs = {}
    if grid_pngs is not None:
        grids = len(grid_pngs)
    for g in range(grids):
        pngs[f"grids/grid_{g:08d}.png"] = grid_pngs[g] if grid_pngs else grid_png(g + 100 * len(name))
        store.put_bytes(pngs[f"grids/grid_{g:08d}.png"], f"grids/grid_{g:08d}.png")
    perf = {"backend": "onnxruntime", "devices": ["cpu"], "batch": 100, "threads": 1, "shards": 1,
            "calls": grids, "grids": grids, "latency_ms": {"mean": latency_ms_mean, "median": latency_ms_mean - 1,
                                                           "p99": latency_ms_mean * 1.5, "min": 40.0, "max": 130.0},
            "grids_per_s": grids_per_s, "images_per_s": grids_per_s * 100,
            "notes": ["grids/s is per device, never multiplied by the number of devices"]}
    per_class = {str(d): round(min(1.0, label_accuracy + (d - 4.5) / 100), 3) for d in range(10)}
    quality = {"label_accuracy": label_accuracy, "per_class_accuracy": per_class, "parity_max_abs_err": 2e-6,
               "classifier_holdout_accuracy": 0.978, "grids": grids, "digits_judged": grids * 100,
               "parity_grids_checked": grids}
    store.put_bytes(json.dumps(perf).encode(), "perf/perf.json")
    store.put_bytes(json.dumps(quality).encode(), "quality/quality.json")
    plot = tmp_path / f"latency-{name}.png"
    if latency_plot:
        plot.write_bytes(latency_plot)
    else:
        Image.new("RGB", (320, 120), (200, 220, 255)).save(plot)
    store.put_file(plot, "perf/latency.png")
    pngs["perf/latency.png"] = plot.read_bytes()
    summary = {"grids": grids, "label_accuracy": label_accuracy, "parity_max_abs_err": 2e-6,
               "grids_per_s": grids_per_s, "latency_ms_mean": latency_ms_mean, "backend": "onnxruntime"}
    if gate_failures is not None:  # the quality gate's verdict, as postprocess records it
        summary.update(gate="rejected" if gate_failures else "accepted", gate_failures=gate_failures)
    metadata = build_metadata(run_id=run_id, logical_date=logical_date,
                              params={"num_grids": grids, "seed": 7, "target": "cpu"},
                              export={"onnx_sha256": "ab" * 32, "checkpoint_sha256": "cd" * 32}, convert=None,
                              postprocess=summary)
    publish_run(store, client, bucket, f"runs/{name}", metadata=metadata, log=lambda _: None,
                tmp_dir=tmp_path / f"tmp-{name}")
    return pngs


OLD = "scheduled__2026-05-01T02-00-00-00-00"
NEW = "scheduled__2026-05-02T02-00-00-00-00"
HOSTILE = "manual__hostile"
HOSTILE_RUN_ID = '<script>alert("x")</script>&<b>'


@pytest.fixture(scope="session")
def published(local_s3, tmp_path_factory):
    """Bucket `gallery` with two published nightly runs, a half-published prefix (no manifest),
    objects beside the runs that no manifest lists, and (in `gallery-hostile`) a run whose
    run id is HTML."""
    client = local_s3["client"]
    tmp = tmp_path_factory.mktemp("published")
    client.create_bucket(Bucket="gallery")
    pngs = {
        OLD: publish_fake_run(client, "gallery", tmp, OLD, run_id="scheduled__2026-05-01T02:00:00+00:00",
                              logical_date="2026-05-01T02:00:00+00:00", grids_per_s=12.5, label_accuracy=0.91),
        NEW: publish_fake_run(client, "gallery", tmp, NEW, run_id="scheduled__2026-05-02T02:00:00+00:00",
                              logical_date="2026-05-02T02:00:00+00:00", grids=4, grids_per_s=15.0,
                              label_accuracy=0.95),
    }
    png = grid_png(99)
    client.put_object(Bucket="gallery", Key="runs/half-done/grids/grid_00000000.png", Body=png)
    client.put_object(Bucket="gallery", Key=f"runs/{NEW}/grids/not_in_manifest.png", Body=png)
    client.put_object(Bucket="gallery", Key="private/secret.png", Body=png)
    client.create_bucket(Bucket="gallery-hostile")
    publish_fake_run(client, "gallery-hostile", tmp, HOSTILE, run_id=HOSTILE_RUN_ID,
                     logical_date="2026-05-03T02:00:00+00:00", grids=1)
    return {"client": client, "bucket": "gallery", "pngs": pngs}


def load_plugin_module():
    """plugins/cgan_gallery.py imported the way Airflow does: a top-level module named by its stem."""
    if "cgan_gallery" in sys.modules:
        return sys.modules["cgan_gallery"]
    spec = importlib.util.spec_from_file_location("cgan_gallery", PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cgan_gallery"] = module
    spec.loader.exec_module(module)
    return module
