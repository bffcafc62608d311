"""Many runs in a row, published and failed, through the real operators on one file:// artifact
root: the store stays bounded. A day passes between runs (the files' times are moved back, as the
retention reads them); the retention is 7 days."""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import pytest

from cgan.run.plan import make_plan
from cgan.storage.store import LocalStore

RETENTION_DAYS = 7
DAYS_BETWEEN_RUNS = 2


class Quiet:
    def info(self, *a):
        pass

    warning = error = debug = info


@pytest.fixture
def quiet(monkeypatch):
    from tests.operators.test_operators import OPERATORS

    for cls in OPERATORS:
        monkeypatch.setattr(cls, "log", property(lambda self: Quiet()))


def one_run(root: Path, n: int, checkpoint: Path, *, fail: bool) -> dict:
    """plan -> export -> bins -> inference -> postprocess -> (published) cleanup, as the DAG runs
    them; a failing run stops at inference (its model URI is wrong) and is not cleaned up."""
    from datetime import datetime

    from operators.cleanup import CleanupWorkspaceOperator
    from operators.export_onnx import ExportOnnxOperator
    from operators.input_bins import InputBinsOperator
    from operators.onnxruntime_inference import OnnxRuntimeInferenceOperator
    from operators.postprocess import PostprocessOperator

    plan = make_plan({"num_grids": 4, "grids_per_shard": 2, "seed": n}, run_id=f"manual__run{n}",
                     logical_date=datetime(2026, 1, 1, tzinfo=UTC), artifact_root=root.as_uri())
    ws = plan["workspace"]
    export = ExportOnnxOperator(task_id="export_onnx", workspace=ws, checkpoint=str(checkpoint)).execute({})
    for shard in plan["shards"]:  # mapped over the shards, as the DAG runs it
        InputBinsOperator(task_id="input_bins", workspace=ws, shard=shard, seed=plan["seed"]).execute({})
    onnx_uri = export["onnx_uri"] + (".missing" if fail else "")
    try:
        for shard in plan["shards"]:
            OnnxRuntimeInferenceOperator(task_id="onnxruntime_infer", workspace=ws, shard=shard,
                                         onnx_uri=onnx_uri).execute({})
    except Exception:
        if fail:
            return {}
        raise
    PostprocessOperator(task_id="postprocess", workspace=ws, shards=plan["shards"],
                        checkpoint=str(checkpoint)).execute({})
    # (publish reads the workspace only; the DAG runs cleanup when publish succeeded; no publish
    # bucket here: its sweep is tested in tests/cgan/publishing/test_staged_publish.py and the DAG tests)
    return CleanupWorkspaceOperator(task_id="cleanup", workspace=ws, publish_bucket="cgan",
                                    sweep_publish_bucket=False).execute({})


def a_day_passes(root: Path, days: float) -> None:
    for path in (root / "runs").rglob("*"):
        st = path.stat()
        os.utime(path, (st.st_atime - days * 86400, st.st_mtime - days * 86400))


def test_many_runs_leave_the_artifact_store_bounded(tmp_path, upstream_checkpoint, quiet, monkeypatch):
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", root.as_uri())
    monkeypatch.setenv("CGAN_WORKSPACE_RETENTION_DAYS", str(RETENTION_DAYS))
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", f"models,{upstream_checkpoint.parent}")  # export re-checks them
    store = LocalStore(root)
    pattern = "SFSFFSSFSS"  # S: published, F: failed after writing its bins
    failed_bytes, model_bytes = 0, None
    history = []
    for n, kind in enumerate(pattern):
        result = one_run(root, n, upstream_checkpoint, fail=kind == "F")
        models = store.usage("models")
        model_bytes = model_bytes or models[1]
        assert models == (2, model_bytes)  # one exported model, reused by every run
        workspaces = sorted(p.name for p in (root / "runs").iterdir() if any(p.rglob("*")))
        history.append((kind, workspaces))
        if kind == "F":
            failed_bytes = max(failed_bytes, store.usage(f"runs/manual__run{n}")[1])
            assert f"manual__run{n}" in workspaces  # kept for inspection
        else:
            assert f"manual__run{n}" not in workspaces and result["removed_bytes"] > 0
            # after a published run: only failed runs' workspaces younger than the retention
            assert all(pattern[int(w.rsplit("run", 1)[1])] == "F" for w in workspaces)
            assert len(workspaces) <= RETENTION_DAYS // DAYS_BETWEEN_RUNS + 1
            assert result["left_bytes"] == store.usage()[1]
        # the bound stated in docs/data-layout.md: the model store plus the failed runs of the retention window
        bound = model_bytes + (RETENTION_DAYS // DAYS_BETWEEN_RUNS + 1) * failed_bytes
        assert store.usage()[1] <= bound, history
        a_day_passes(root, DAYS_BETWEEN_RUNS)
    # the first failed run (run 1) was removed once it was older than the retention
    assert "manual__run1" not in history[-1][1] and "manual__run7" in history[-1][1]
