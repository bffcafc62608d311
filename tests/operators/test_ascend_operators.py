"""AtcConvertOperator and MsameInferenceOperator, executed directly on a file:// workspace with
the stand-in atc and msame (tests/standins: no NPU; the "om" is the ONNX file)."""

import inspect
import json
import shutil

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cgan.ascend.errors import AscendError, AtcError, MsameError
from cgan.store import LocalStore
from operators.atc_convert import AtcConvertOperator
from operators.msame_inference import MsameInferenceOperator

SHARD = {"shard": 0, "bins_prefix": "bins/shard_0000", "device": 2}


class Lines:
    def __init__(self):
        self.lines = []
        self.warnings = []

    def info(self, msg, *args):
        self.lines.append(msg % args if args else msg)

    def warning(self, msg, *args):
        self.warnings.append(msg % args if args else msg)
        self.info(msg, *args)

    error = debug = info


@pytest.fixture(autouse=True)
def eight_devices(clean_env):
    """The stand-in npu-smi lists an Atlas 300 host: NPU 2048/2049, devices 0..7 (SHARD uses 2)."""
    clean_env.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")


@pytest.fixture
def task_log(monkeypatch):
    log = Lines()
    for cls in (AtcConvertOperator, MsameInferenceOperator):
        monkeypatch.setattr(cls, "log", property(lambda self: log))
    return log


@pytest.fixture
def workspace(tmp_path, upstream_onnx, bins3):
    store = LocalStore(tmp_path / "ws")
    store.put_file(upstream_onnx, "model/cgan.onnx")
    for path in sorted(bins3.glob("*.bin")):
        store.put_file(path, f"bins/shard_0000/{path.name}")
    store.put_bytes(b"0 x 72 100\n", "bins/shard_0000/CGAN_prep_bin.info")  # as InputBinsOperator leaves it
    return store


def atc_op(store, tmp_path, toolkit, **kwargs):
    kwargs.setdefault("cache_uri", (tmp_path / "cache").as_uri())
    kwargs.setdefault("soc_version", "Ascend310P3")
    return AtcConvertOperator(task_id="atc_convert", workspace=store.uri, toolkit_home=str(toolkit), **kwargs)


@pytest.mark.parametrize("cls, required", [
    (AtcConvertOperator, {"workspace": "file:///w", "soc_version": "Ascend310"}),
    (MsameInferenceOperator, {"workspace": "file:///w", "shard": SHARD}),
])
def test_template_fields_are_init_parameters_and_raw_attributes(cls, required):
    params = inspect.signature(cls.__init__).parameters
    op = cls(task_id="t", **required)
    for name in cls.template_fields:
        assert name in params, f"{name} is not an __init__ parameter"
        expected = required.get(name, params[name].default)
        assert getattr(op, name) == expected, name
    assert op.queue == "ascend"


def test_defaults_queue_and_pool():
    assert MsameInferenceOperator(task_id="m", workspace="file:///w", shard=SHARD).pool == "ascend_npu"
    assert MsameInferenceOperator(task_id="m", workspace="file:///w", shard=SHARD, pool="p", queue="q").pool == "p"
    assert AtcConvertOperator(task_id="a", workspace="file:///w", soc_version="x").queue == "ascend"


def test_atc_convert_uploads_om_and_second_run_hits_cache(tmp_path, fake_toolkit, calls, workspace,
                                                          upstream_onnx, task_log):
    result = atc_op(workspace, tmp_path, fake_toolkit).execute(context={})
    assert set(result) >= {"om_key", "cache_hit", "cache_key", "log_key"}
    assert result["om_key"] == "model/cgan.om" and result["cache_hit"] is False
    assert workspace.get_bytes("model/cgan.om") == upstream_onnx.read_bytes()
    assert "ATC run success" in workspace.get_bytes("model/atc.log").decode()
    assert "ATC start working now, please wait for a moment." in task_log.lines  # streamed
    assert result["toolkit_version"].startswith("7.0.0")
    (tmp_path / "ws" / "model" / "cgan.om").unlink()
    again = atc_op(workspace, tmp_path, fake_toolkit).execute(context={})
    assert again["cache_hit"] is True and again["cache_key"] == result["cache_key"]
    assert len([c for c in calls("atc") if c["argv"] != ["--version"]]) == 1
    assert workspace.exists("model/cgan.om")
    assert json.loads(json.dumps(again)) == again  # XCom-serialisable


def test_the_om_keeps_the_name_atc_gave_it_and_msame_runs_it(tmp_path, fake_toolkit, workspace, task_log,
                                                              standins_on_path, monkeypatch):
    """Newer atc writes cgan_linux_<arch>.om (it runs only there): the workspace keeps that name."""
    from cgan.ascend.target import host_target

    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "auto")
    monkeypatch.setenv("STANDIN_MSAME_TEARDOWN_FAIL", "finalize")  # and a teardown hiccup on the NPU
    result = atc_op(workspace, tmp_path, fake_toolkit).execute(context={})
    om_key = f"model/cgan_{host_target()}.om"
    assert result["om_key"] == om_key and workspace.exists(om_key) and not workspace.exists("model/cgan.om")
    hit = atc_op(workspace, tmp_path, fake_toolkit).execute(context={})
    assert hit["cache_hit"] and hit["om_key"] == om_key
    op = MsameInferenceOperator(task_id="msame_infer", workspace=workspace.uri, shard=SHARD, om_key=om_key)
    assert op.execute(context={})["grids"] == 3
    assert [w for w in task_log.warnings if "[ERROR] finalize acl failed" in w]
    perf = json.loads(workspace.get_bytes("outputs/shard_0000/perf.json"))
    assert any("[ERROR] finalize acl failed" in n for n in perf["notes"])


def test_atc_cache_defaults_to_the_artifact_root(tmp_path, fake_toolkit, workspace, task_log, monkeypatch):
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", (tmp_path / "root").as_uri())
    result = atc_op(workspace, tmp_path, fake_toolkit, cache_uri=None).execute(context={})
    assert (tmp_path / "root" / "atc-cache" / result["cache_key"] / "model.om").is_file()


def test_atc_failure_raises_the_cgan_error(tmp_path, fake_toolkit, workspace, task_log, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "ecode")
    with pytest.raises(AirflowFailException, match="EZ3003") as err:  # deterministic: no retries
        atc_op(workspace, tmp_path, fake_toolkit).execute(context={})
    assert isinstance(err.value.__cause__, AtcError)
    assert not workspace.exists("model/cgan.om")
    assert any(line.startswith("EZ3003") for line in task_log.lines)


def test_atc_bad_soc_is_refused_before_any_download(tmp_path, fake_toolkit, calls, workspace, task_log):
    with pytest.raises(AirflowFailException, match="not an Ascend SoC name") as err:  # no retry for bad input
        atc_op(workspace, tmp_path, fake_toolkit, soc_version="Ascend310'; reboot").execute(context={})
    assert isinstance(err.value.__cause__, AscendError)
    assert calls("atc") == []


def msame_ws(workspace, om):
    workspace.put_file(om, "model/cgan.om")
    workspace.put_bytes(b"stale", "outputs/shard_0000/grid_999999_output_0.bin")
    return workspace


def test_msame_inference_uploads_outputs_perf_and_log(tmp_path, standins_on_path, calls, workspace,
                                                     standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    shard = dict(SHARD, start=0, count=3)  # the DAG's shard dicts carry more keys
    op = MsameInferenceOperator(task_id="msame_infer", workspace=store.uri, shard=shard)
    result = op.execute(context={})
    assert result == {"shard": 0, "outputs_prefix": "outputs/shard_0000", "perf_key": "outputs/shard_0000/perf.json",
                      "grids": 3, "device": 2, "grids_per_s": result["grids_per_s"]}
    keys = store.list("outputs/shard_0000")
    assert keys == [f"outputs/shard_0000/grid_00000{i}_output_0.bin" for i in range(3)] + [
        "outputs/shard_0000/msame.log", "outputs/shard_0000/perf.json"]  # the stale bin is gone
    perf = json.loads(store.get_bytes("outputs/shard_0000/perf.json"))
    assert perf["backend"] == "msame" and perf["device"] == "npu:2" and len(perf["samples_ms"]) == perf["calls"]
    assert any("Execute sample success" in line for line in task_log.lines)
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--device") + 1] == "2"


def test_outputs_prefix_matches_postprocess():
    from cgan.ascend.shards import outputs_prefix
    from cgan.postprocess import outputs_prefix as post_prefix

    assert outputs_prefix(7) == post_prefix({"shard": 7})


def test_msame_device_override_and_templated_strings(tmp_path, standins_on_path, calls, workspace, standin_om,
                                                     task_log):
    store = msame_ws(workspace, standin_om)
    op = MsameInferenceOperator(task_id="m", workspace=store.uri, shard=SHARD, device="5", loop="1")
    assert op.execute(context={})["device"] == 5
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--device") + 1] == "5"


def test_msame_failure_raises_and_leaves_no_outputs(tmp_path, standins_on_path, workspace, standin_om,
                                                    task_log, monkeypatch):
    store = msame_ws(workspace, standin_om)
    monkeypatch.setenv("STANDIN_MSAME_MODE", "short_output")
    with pytest.raises(MsameError, match="156,800 bytes"):
        MsameInferenceOperator(task_id="m", workspace=store.uri, shard=SHARD).execute(context={})
    assert store.list("outputs/shard_0000") == []


@pytest.mark.parametrize("shard, message", [
    ({"shard": 0, "bins_prefix": "bins/shard_0000", "device": None}, "names no device"),
    ({"shard": 0, "bins_prefix": "bins/shard_0000", "device": 999}, "0..255"),
    ({"shard": 0, "bins_prefix": "../etc", "device": 0}, "unsafe part"),
    ({"shard": -1, "bins_prefix": "bins/shard_0000", "device": 0}, "0 or more"),
    ({"bins_prefix": "bins/shard_0000"}, "must be a dict with"),
    ("shard_0", "must be a dict with"),
])
def test_bad_shards_are_refused_before_msame(tmp_path, standins_on_path, calls, workspace, standin_om,
                                             task_log, shard, message):
    store = msame_ws(workspace, standin_om)
    with pytest.raises(Exception, match=message):
        MsameInferenceOperator(task_id="m", workspace=store.uri, shard=shard).execute(context={})
    assert calls("msame") == []


def test_shard_without_bins(tmp_path, standins_on_path, workspace, standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    shard = {"shard": 3, "bins_prefix": "bins/shard_0003", "device": 0}
    with pytest.raises(AirflowFailException, match="no input bins under bins/shard_0003"):
        MsameInferenceOperator(task_id="m", workspace=store.uri, shard=shard).execute(context={})


def test_msame_path_parameter(tmp_path, clean_env, workspace, standin_om, task_log):
    """msame given by path (not on PATH), as on a worker where it was built in /opt."""
    from tests.standins.fixtures import STANDINS

    store = msame_ws(workspace, standin_om)
    tool = tmp_path / "opt" / "msame"
    tool.parent.mkdir()
    shutil.copy(STANDINS / "msame", tool)
    op = MsameInferenceOperator(task_id="m", workspace=store.uri, shard=SHARD, msame_path=str(tool))
    assert op.execute(context={})["grids"] == 3


def test_msame_gets_the_cann_environment_when_set_env_exists(tmp_path, fake_toolkit, calls, workspace,
                                                             standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    MsameInferenceOperator(task_id="m", workspace=store.uri, shard=SHARD,
                           toolkit_home=str(fake_toolkit)).execute(context={})
    (call,) = calls("msame")
    assert call["ascend_opp_path"] == f"{fake_toolkit}/latest/opp"
    assert any("environment from" in line for line in task_log.lines)


def test_msame_without_set_env_uses_the_worker_environment(tmp_path, standins_on_path, calls, workspace,
                                                           standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    MsameInferenceOperator(task_id="m", workspace=store.uri, shard=SHARD,
                           toolkit_home=str(tmp_path / "none")).execute(context={})
    assert calls("msame")[0]["ascend_opp_path"] is None
    assert any("set_env.sh not found" in line for line in task_log.lines)
