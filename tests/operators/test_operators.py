"""Every operator of operators/: the shared base (template fields, documented parameters,
fail-fast policy, one store per task), and the cpu-path operators executed on file:// stores."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re

import pytest
from airflow.sdk.exceptions import AirflowFailException

import operators
from cgan.storage.keys import StoreError
from cgan.storage.store import LocalStore
from operators.base import CganBaseOperator


def all_operators() -> list[type]:
    for info in pkgutil.iter_modules(operators.__path__):
        importlib.import_module(f"operators.{info.name}")
    found, todo = set(), [CganBaseOperator]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("operators.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted(found, key=lambda c: c.__name__)


OPERATORS = all_operators()
REQUIRED = {"workspace": "file:///w", "checkpoint": "models/x.pth", "shards": [], "seed": 1, "shard": {},
            "onnx_uri": "file:///m/cgan.onnx", "om_uri": "file:///c/model.om", "soc_version": "Ascend310P3",
            "bucket": "b-1", "run_prefix": "runs/r", "params_used": {}, "publish_bucket": "cgan"}


def init_params(cls) -> dict[str, inspect.Parameter]:
    """Every keyword __init__ takes, its own and its bases' (up to BaseOperator)."""
    params = {}
    for klass in cls.__mro__:
        if klass is CganBaseOperator.__mro__[1]:
            break
        if "__init__" in vars(klass):
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if name not in ("self", "kwargs") and name not in params:
                    params[name] = p
    return params


def test_every_operator_is_found():
    names = {c.__name__ for c in OPERATORS}
    assert {"ExportOnnxOperator", "InputBinsOperator", "AtcConvertOperator", "AscendInferenceOperator",
            "OnnxRuntimeInferenceOperator", "PostprocessOperator", "PublishRunOperator",
            "CleanupWorkspaceOperator"} <= names


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda c: c.__name__)
def test_template_fields_are_init_parameters_and_raw_attributes(cls):
    params = init_params(cls)
    required = {k: v for k, v in REQUIRED.items() if k in params and params[k].default is inspect.Parameter.empty}
    op = cls(task_id="t", **required)
    assert "workspace" in cls.template_fields
    for name in cls.template_fields:
        assert name in params, f"{cls.__name__}.{name} is not an __init__ parameter"
        expected = required.get(name, params[name].default)
        assert getattr(op, name) == expected, name


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda c: c.__name__)
def test_every_parameter_is_documented(cls):
    documented = set(re.findall(r":param (\w+):", cls.__doc__ or ""))
    missing = sorted(set(init_params(cls)) - documented)
    assert not missing, f"{cls.__name__} does not document {missing}"


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda c: c.__name__)
def test_the_fail_fast_policy_wraps_every_execute(cls):
    assert getattr(cls.execute, "_fail_fast", False), cls.__name__


def test_bad_input_fails_without_retries_and_a_flaky_store_keeps_them():
    class Step(CganBaseOperator):
        """:param workspace: w\n:param aws_conn_id: c\n:param error: what execute raises"""

        def __init__(self, *, error, **kwargs):
            super().__init__(**kwargs)
            self.error = error

        def execute(self, context):
            raise self.error

    with pytest.raises(AirflowFailException, match="StoreError: bad key"):
        Step(task_id="s", workspace="file:///w", error=StoreError("bad key")).execute({})
    with pytest.raises(ConnectionError):
        Step(task_id="s", workspace="file:///w", error=ConnectionError("store down")).execute({})


def test_the_workspace_store_is_opened_once(tmp_path, monkeypatch):
    import operators.base as base

    opened = []
    monkeypatch.setattr(base, "open_artifact_store", lambda uri, conn: opened.append(uri) or LocalStore(tmp_path))
    op = base.CganBaseOperator(task_id="t", workspace=(tmp_path / "ws").as_uri())
    assert op.store is op.store and len(opened) == 1


def test_fetch_opens_the_folder_of_an_object_uri(tmp_path):
    (tmp_path / "models" / "k").mkdir(parents=True)
    (tmp_path / "models" / "k" / "cgan.onnx").write_bytes(b"onnx")
    op = CganBaseOperator(task_id="t", workspace="file:///w")
    got = op.fetch((tmp_path / "models" / "k" / "cgan.onnx").as_uri(), tmp_path / "local" / "m.onnx")
    assert got.read_bytes() == b"onnx"
    with pytest.raises(StoreError, match="not found"):
        op.fetch((tmp_path / "models" / "none.onnx").as_uri(), tmp_path / "x")


# --- the cpu path, executed ----------------------------------------------------------------


class Lines:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append(msg % args if args else msg)

    warning = error = debug = info


@pytest.fixture
def task_log(monkeypatch):
    log = Lines()
    for cls in OPERATORS:
        monkeypatch.setattr(cls, "log", property(lambda self: log))
    return log


def test_export_is_stored_once_per_content_and_reused(tmp_path, upstream_checkpoint, task_log, monkeypatch):
    from operators.export_onnx import ExportOnnxOperator

    root = tmp_path / "root"
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", root.as_uri())
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", f"models,{upstream_checkpoint.parent}")  # re-checked where read
    calls = []
    import cgan.recipe.export

    real = cgan.recipe.export.export_onnx
    monkeypatch.setattr(cgan.recipe.export, "export_onnx", lambda *a, **k: calls.append(a) or real(*a, **k))

    def export(run: str, **kwargs):
        op = ExportOnnxOperator(task_id="export_onnx", workspace=(root / "runs" / run).as_uri(),
                                checkpoint=str(upstream_checkpoint), **kwargs)
        return op.execute({})

    first, second = export("r1"), export("r2")
    assert len(calls) == 1 and first["export_reused"] is False and second["export_reused"] is True
    assert first["onnx_uri"] == second["onnx_uri"] == (root / "models" / first["model_key"] / "cgan.onnx").as_uri()
    assert first["onnx_sha256"] == second["onnx_sha256"] and second["channels"] == 1
    assert not (root / "runs").exists()  # nothing copied into a run's workspace
    other = export("r3", opset=13)  # other settings: another entry
    assert len(calls) == 2 and other["model_key"] != first["model_key"]
    # a damaged entry is a miss, exported again and repaired
    (root / "models" / first["model_key"] / "cgan.onnx").write_bytes(b"damaged")
    again = export("r4")
    assert len(calls) == 3 and again["export_reused"] is False and again["onnx_sha256"] == first["onnx_sha256"]
    assert any("Model store hit" in line for line in task_log.lines)


@pytest.mark.parametrize("swapped", ["file", "folder"])
def test_a_checkpoint_swapped_for_a_link_out_of_the_roots_after_plan_is_refused_where_it_is_read(
        tmp_path, upstream_checkpoint, task_log, monkeypatch, swapped):
    """`plan` checks the checkpoint against CGAN_CHECKPOINT_ROOTS, but the export task reads it
    later: the file (or a folder on its path) replaced by a symlink out of the roots in between is
    refused where it is read, naming the path, where it leads, the roots and the fix; nothing is
    read or exported. A link that stays inside the roots is read through its target."""
    import shutil

    from cgan import settings
    from cgan.run.plan import check_checkpoint_root
    from operators.export_onnx import ExportOnnxOperator

    allowed = tmp_path / "ckpts"
    (allowed / "team").mkdir(parents=True)
    checkpoint = allowed / "team" / "g.pth"
    shutil.copy(upstream_checkpoint, checkpoint)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(upstream_checkpoint, outside / "g.pth")  # a loadable generator: only the roots can stop it
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", f"models,{allowed}")
    root = tmp_path / "root"
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", root.as_uri())
    assert check_checkpoint_root(str(checkpoint), settings.checkpoint_roots())  # what plan checked: accepted

    if swapped == "file":  # after plan: the file itself becomes a link out of the roots
        checkpoint.unlink()
        checkpoint.symlink_to(outside / "g.pth")
    else:  # a folder on its path does
        shutil.rmtree(allowed / "team")
        (allowed / "team").symlink_to(outside, target_is_directory=True)
    op = ExportOnnxOperator(task_id="export_onnx", workspace=(root / "runs" / "r").as_uri(),
                            checkpoint=str(checkpoint))
    with pytest.raises(AirflowFailException, match="outside the checkpoint roots") as refused:
        op.execute({})
    message = str(refused.value)
    assert str(checkpoint) in message and str((outside / "g.pth").resolve()) in message
    assert f"models, {allowed}" in message and "CGAN_CHECKPOINT_ROOTS" in message and "symbolic link" in message
    assert not (root / "models").exists()  # nothing read, nothing exported

    # a link that stays inside the roots (e.g. latest.pth -> v2.pth) is fine, read through its target
    shutil.copy(upstream_checkpoint, allowed / "v2.pth")
    (allowed / "latest.pth").symlink_to(allowed / "v2.pth")
    base = CganBaseOperator(task_id="t", workspace="file:///w")
    assert base.local_checkpoint(str(allowed / "latest.pth"), tmp_path) == (allowed / "v2.pth").resolve()
    # an s3:// checkpoint outside the roots (an XCom edited since plan) is refused before any download
    from cgan.run.plan import ParamError

    with pytest.raises(ParamError, match="outside the checkpoint roots"):
        base.local_checkpoint("s3://other-team/g.pth", tmp_path)


def test_bins_packed_per_shard_then_onnxruntime_hands_over_pngs_tally_perf_and_parity_outputs(
        tmp_path, upstream_onnx, upstream_checkpoint, task_log):
    from cgan.layout.packs import read_members
    from cgan.recipe.bins import write_bins
    from cgan.run.plan import plan_shards
    from cgan.run.postprocess import postprocess_run
    from cgan.run.staging import check_packs
    from operators.input_bins import InputBinsOperator
    from operators.onnxruntime_inference import OnnxRuntimeInferenceOperator

    store = LocalStore(tmp_path / "ws")
    shards = plan_shards(12, "cpu", [0], 6, parity_grids=3)
    store.put_bytes(b"stale", "bins/shard_0001/grid_00000099.bin")  # a shard's prefix is emptied first
    for shard in shards:  # mapped over the shards, as the DAG runs it
        assert InputBinsOperator(task_id="input_bins", workspace=store.uri, shard=shard.as_xcom(),
                                 seed=4).execute({}) == {"shard": shard.index, "bins": 6, "seed": 4}
    assert store.list("bins") == ["bins/shard_0000/inputs.pack", "bins/shard_0001/inputs.pack"]  # one object a shard
    write_bins(tmp_path / "expected", 12, 4)
    assert store.get_bytes("bins/shard_0001/inputs.pack") == b"".join(
        (tmp_path / "expected" / f"grid_{g:08d}.bin").read_bytes() for g in range(6, 12))
    for shard in shards:
        result = OnnxRuntimeInferenceOperator(task_id="onnxruntime_infer", workspace=store.uri, shard=shard,
                                              onnx_uri=upstream_onnx.as_uri()).execute({})
        assert result["raw_outputs_kept"] == len(shard.parity)
        assert result["peak_rss_mb"] > 50  # this process's peak (VmHWM), for make bench
    assert [g for s in shards for g in s.parity] == [0, 6, 11]
    assert [k for k in store.list("outputs") if k.endswith(".bin")] == [
        "outputs/shard_0000/grid_00000000_output_0.bin", "outputs/shard_0001/grid_00000006_output_0.bin",
        "outputs/shard_0001/grid_00000011_output_0.bin"]
    # the grids rendered on the workers, as packs in the workspace (no bucket): one per shard, in grid order
    assert store.list("packs") == ["packs/pack_00000000.json", "packs/pack_00000000.tar",
                                   "packs/pack_00000006.json", "packs/pack_00000006.tar"]
    members = [name for first in (0, 6) for name, _ in
               read_members(store.get_file(f"packs/pack_{first:08d}.tar", tmp_path / "got" / f"{first}.tar"))]
    assert members == [f"grid_{g:08d}.png" for g in range(12)]
    tally = json.loads(store.get_bytes("outputs/shard_0001/render.json"))
    assert check_packs(tally["packs"], 6, 6) is None and tally["packs"]["bucket"] is None
    assert {k.rsplit("/", 1)[1] for k in store.list("outputs")} >= {"perf.json", "render.json"}
    summary = postprocess_run(store, shards, upstream_checkpoint, log=lambda m: None)
    quality = json.loads(store.get_bytes("quality/quality.json"))
    assert summary["grids"] == 12 and quality["parity_grids_checked"] == 3 and quality["parity_max_abs_err"] < 1e-4
    assert any("3 raw output(s) kept" in line or "2 raw output(s) kept" in line for line in task_log.lines)


def test_cleanup_refuses_a_workspace_outside_the_root_and_the_publish_bucket_root(tmp_path, task_log):
    from operators.cleanup import CleanupWorkspaceOperator

    outside = tmp_path / "elsewhere" / "runs" / "r"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("x")
    op = CleanupWorkspaceOperator(task_id="cleanup", workspace=outside.as_uri(), publish_bucket="cgan",
                                  artifact_root=(tmp_path / "root").as_uri())
    with pytest.raises(AirflowFailException, match="not a run workspace under"):
        op.execute({})
    assert (outside / "keep.txt").exists()
    op = CleanupWorkspaceOperator(task_id="cleanup", workspace="s3://cgan/runs/r", publish_bucket="cgan",
                                  artifact_root="s3://cgan")
    with pytest.raises(AirflowFailException, match="would be the published runs"):
        op.execute({})
