"""AtcConvertOperator and AscendInferenceOperator, executed directly on a file:// workspace with
the stand-in atc and msame (tests/standins: no NPU; the "om" is the ONNX file)."""

import json
import shutil
import socket

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cgan.ascend.errors import AscendError, AtcError, MsameError
from cgan.run.shard import Shard
from cgan.storage.store import LocalStore
from operators.ascend_inference import AscendInferenceOperator
from operators.atc_convert import AtcConvertOperator

SHARD = {"shard": 0, "start": 0, "count": 3, "bins_prefix": "bins/shard_0000", "devices": [2]}  # as the plan makes it


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
def eight_devices(clean_env, tmp_path):
    """The stand-in npu-smi lists an Atlas 300 host: NPU 2048/2049, devices 0..7 (SHARD uses 2);
    the NPU leases of this test in a folder of its own."""
    clean_env.setenv("STANDIN_NPU_SMI_SAMPLE", "atlas300_310_x8.txt")
    clean_env.setenv("CGAN_NPU_LOCK_DIR", str(tmp_path / "npu-locks"))
    clean_env.setenv("CGAN_NPU_DEVICES", "0,1,2,3,4,5,6,7")  # this worker's NPUs, as on that host


@pytest.fixture
def task_log(monkeypatch):
    log = Lines()
    for cls in (AtcConvertOperator, AscendInferenceOperator):
        monkeypatch.setattr(cls, "log", property(lambda self: log))
    return log


@pytest.fixture
def workspace(tmp_path, bins3):
    store = LocalStore(tmp_path / "ws")
    store.put_bytes(b"".join(p.read_bytes() for p in sorted(bins3.glob("*.bin"))), "bins/shard_0000/inputs.pack")
    store.put_bytes(b"0 x 72 100\n", "bins/shard_0000/CGAN_prep_bin.info")  # as InputBinsOperator leaves it
    return store


@pytest.fixture
def onnx_uri(upstream_onnx):
    return upstream_onnx.as_uri()  # as the export task names it in the model store


def atc_op(store, tmp_path, toolkit, **kwargs):
    kwargs.setdefault("cache_uri", (tmp_path / "cache").as_uri())
    kwargs.setdefault("soc_version", "Ascend310P3")
    kwargs.setdefault("onnx_uri", kwargs.pop("onnx", None))
    return AtcConvertOperator(task_id="atc_convert", workspace=store.uri, toolkit_home=str(toolkit), **kwargs)


def test_defaults_queue_and_pool():
    msame = dict(workspace="file:///w", shard=SHARD, om_uri="file:///c/model.om")
    assert AscendInferenceOperator(task_id="m", **msame).pool == "ascend_npu"
    assert AscendInferenceOperator(task_id="m", **msame).queue == "ascend"
    assert AscendInferenceOperator(task_id="m", **msame, pool="p", queue="q").pool == "p"
    atc = AtcConvertOperator(task_id="a", workspace="file:///w", onnx_uri="file:///m.onnx", soc_version="x")
    assert atc.queue == "ascend"


def test_atc_convert_leaves_the_om_in_the_cache_and_second_run_hits_it(tmp_path, fake_toolkit, calls, workspace,
                                                                       upstream_onnx, onnx_uri, task_log):
    result = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert set(result) >= {"om_uri", "cache_hit", "cache_key", "log_key", "om_sha256"}
    assert result["om_uri"] == (tmp_path / "cache").as_uri() + f"/atc-cache/{result['cache_key']}/model.om"
    assert result["cache_hit"] is False
    om = tmp_path / "cache" / "atc-cache" / result["cache_key"] / "model.om"
    assert om.read_bytes() == upstream_onnx.read_bytes()
    assert not [k for k in workspace.list() if k.endswith(".om") or k.endswith(".onnx")]  # no model copied per run
    assert "ATC run success" in workspace.get_bytes("logs/atc.log").decode()
    assert "ATC start working now, please wait for a moment." in task_log.lines  # streamed
    assert result["toolkit_version"].startswith("7.0.0")
    again = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert again["cache_hit"] is True and again["cache_key"] == result["cache_key"]
    assert again["om_uri"] == result["om_uri"]
    assert len([c for c in calls("atc") if c["argv"] != ["--version"]]) == 1
    assert json.loads(json.dumps(again)) == again  # XCom-serialisable


def test_an_unknown_toolkit_version_keeps_the_om_in_the_run_not_the_cache(tmp_path, fake_toolkit, calls, workspace,
                                                                          onnx_uri, task_log, monkeypatch):
    """No version file and an `atc --version` without one: the cache refuses (an upgrade would not
    invalidate it), so the om goes into the run's workspace and atc runs every time."""
    for info in fake_toolkit.rglob("ascend_toolkit_install.info"):
        info.unlink()
    monkeypatch.setenv("STANDIN_ATC_VERSION", "ATC version unknown")
    result = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert result["cache_key"] == "" and result["toolkit_version"] == "unknown" and result["cache_hit"] is False
    assert result["om_uri"] == f"{workspace.uri.rstrip('/')}/om/{result['om_name']}"
    assert workspace.list("om") == [f"om/{result['om_name']}"] and not (tmp_path / "cache" / "atc-cache").exists()
    assert any("unknown" in line and "cach" in line for line in task_log.lines)
    again = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert again["cache_hit"] is False
    assert len([c for c in calls("atc") if c["argv"] != ["--version"]]) == 2


def test_the_om_keeps_the_name_atc_gave_it_and_msame_runs_it(tmp_path, fake_toolkit, workspace, onnx_uri,
                                                              task_log, standins_on_path, monkeypatch):
    """Newer atc writes cgan_linux_<arch>.om (it runs only there): msame gets the om under that name."""
    from cgan.ascend.target import host_target

    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "auto")
    monkeypatch.setenv("STANDIN_MSAME_TEARDOWN_FAIL", "finalize")  # and a teardown hiccup on the NPU
    result = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    om_name = f"cgan_{host_target()}.om"
    assert result["om_name"] == om_name
    hit = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert hit["cache_hit"] and hit["om_name"] == om_name and hit["om_uri"] == result["om_uri"]
    op = AscendInferenceOperator(task_id="msame_infer", workspace=workspace.uri, shard=SHARD,
                                om_uri=result["om_uri"], om_name=om_name)
    assert op.execute(context={})["grids"] == 3
    assert [w for w in task_log.warnings if "[ERROR] finalize acl failed" in w]
    perf = json.loads(workspace.get_bytes("outputs/shard_0000/perf.json"))
    assert any("[ERROR] finalize acl failed" in n for n in perf["notes"])


@pytest.mark.parametrize("name", ["../x.om", "cgan.onnx", "a/b.om", ".om", ""])
def test_msame_refuses_an_om_name_that_is_not_a_file_name(workspace, name):
    from airflow.sdk.exceptions import AirflowFailException

    op = AscendInferenceOperator(task_id="m", workspace=workspace.uri, shard=SHARD, om_uri="file:///c/model.om",
                                om_name=name)
    with pytest.raises(AirflowFailException, match="AscendError: om_name"):  # bad input: no retries
        op.execute(context={})


def test_atc_cache_defaults_to_the_artifact_root(tmp_path, fake_toolkit, workspace, onnx_uri, task_log, monkeypatch):
    monkeypatch.setenv("CGAN_ARTIFACT_ROOT", (tmp_path / "root").as_uri())
    result = atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri, cache_uri=None).execute(context={})
    assert (tmp_path / "root" / "atc-cache" / result["cache_key"] / "model.om").is_file()


def test_atc_failure_raises_the_cgan_error(tmp_path, fake_toolkit, workspace, onnx_uri, task_log, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "ecode")
    with pytest.raises(AirflowFailException, match="EZ3003") as err:  # deterministic: no retries
        atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri).execute(context={})
    assert isinstance(err.value.__context__, AtcError)  # kept, not printed
    assert not list((tmp_path / "cache").rglob("*.om"))
    assert any(line.startswith("EZ3003") for line in task_log.lines)


def test_atc_bad_soc_is_refused_before_any_download(tmp_path, fake_toolkit, calls, workspace, onnx_uri, task_log):
    with pytest.raises(AirflowFailException, match="not an Ascend SoC name") as err:  # no retry for bad input
        atc_op(workspace, tmp_path, fake_toolkit, onnx=onnx_uri, soc_version="Ascend310'; reboot").execute(context={})
    assert isinstance(err.value.__context__, AscendError)
    assert calls("atc") == []


def workspace_pngs(store, tmp_path) -> dict[str, bytes]:
    """The grid PNGs of the workspace's packs (no publish bucket: the packs go into the workspace),
    member name -> bytes, in pack then member order, each checked against its pack's index."""
    from cgan.layout.packs import PackIndex, check_member, grid_of_member, read_members

    pngs = {}
    for key in [k for k in store.list("packs") if k.endswith(".tar")]:
        index = PackIndex.from_json(store.get_bytes(key.removesuffix(".tar") + ".json"))
        for name, data in read_members(store.get_file(key, tmp_path / "got" / key)):
            pngs[name] = check_member(index, grid_of_member(name), data)
    return pngs


def msame_ws(workspace, om):
    workspace.put_bytes(b"stale", "outputs/shard_0000/grid_00999999_output_0.bin")
    return workspace


def msame_op(om, **kwargs):
    """The operator with the om named as the atc task hands it over (a URI)."""
    return AscendInferenceOperator(om_uri=om.as_uri(), **kwargs)


def test_msame_inference_renders_on_the_worker_and_hands_over(tmp_path, standins_on_path, calls, workspace,
                                                              standin_om, upstream_onnx, task_log):
    from cgan.recipe.grids import grid_array, png_bytes
    from cgan.recipe.outputs import list_outputs, read_output_bin
    from cgan.run.shard_render import check_render
    from cgan.runtimes.onnxruntime_runner import run_onnxruntime

    store = msame_ws(workspace, standin_om)
    shard = dict(SHARD, start=0, count=3, parity=[1], keep_raw_outputs=False)  # as the DAG's plan makes it
    op = msame_op(standin_om, task_id="msame_infer", workspace=store.uri, shard=shard)
    result = op.execute(context={})
    assert result == {"shard": 0, "outputs_prefix": "outputs/shard_0000", "perf_key": "outputs/shard_0000/perf.json",
                      "grids": 3, "device": 2, "host": socket.gethostname(), "npu_tool": "msame",
                      "grids_per_s": result["grids_per_s"], "raw_outputs_kept": 1, "staged_root": None}
    keys = store.list("outputs/shard_0000")
    assert keys == ["outputs/shard_0000/grid_00000001_output_0.bin",  # the parity sample only; the stale bin is gone
                    "outputs/shard_0000/msame.log", "outputs/shard_0000/perf.json", "outputs/shard_0000/render.json"]
    tally = json.loads(store.get_bytes("outputs/shard_0000/render.json"))
    from cgan.quality.report import QualityAccumulator

    assert check_render(tally, Shard.from_xcom(shard), QualityAccumulator(None).classifier_sha256) is None
    import numpy as np

    kept = store.get_file("outputs/shard_0000/grid_00000001_output_0.bin",
                          tmp_path / "kept" / "grid_00000001_output_0.bin")
    reference = list_outputs(run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "ref").output_dir)
    assert np.allclose(read_output_bin(kept), read_output_bin(reference[1]), atol=1e-5)
    pngs = workspace_pngs(store, tmp_path)  # rendered and packed on the Ascend worker
    assert list(pngs) == [f"grid_0000000{i}.png" for i in range(3)]
    assert store.list("packs") == ["packs/pack_00000000.json", "packs/pack_00000000.tar"]
    assert pngs["grid_00000001.png"] == png_bytes(grid_array(read_output_bin(kept)))
    perf = json.loads(store.get_bytes("outputs/shard_0000/perf.json"))
    assert perf["backend"] == "msame" and perf["device"] == f"npu:2@{socket.gethostname()}"
    assert len(perf["samples_ms"]) == perf["calls"]
    assert any("Execute sample success" in line for line in task_log.lines)
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--device") + 1] == "2"


def test_msame_device_override_and_templated_strings(tmp_path, standins_on_path, calls, workspace, standin_om,
                                                     task_log):
    store = msame_ws(workspace, standin_om)
    op = msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD, device="5", loop="1")
    assert op.execute(context={})["device"] == 5
    argv = calls("msame")[0]["argv"]
    assert argv[argv.index("--device") + 1] == "5"


def test_msame_failure_raises_and_leaves_no_outputs(tmp_path, standins_on_path, workspace, standin_om,
                                                    task_log, monkeypatch):
    store = msame_ws(workspace, standin_om)
    monkeypatch.setenv("STANDIN_MSAME_MODE", "short_output")
    with pytest.raises(MsameError, match="156,800 bytes"):
        msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD).execute(context={})
    assert store.list("outputs/shard_0000") == []


@pytest.mark.parametrize("shard, message", [
    (dict(SHARD, devices=[]), "devices must be a non-empty list"),
    (dict(SHARD, devices=[0, 300]), "0..255"),
    (dict(SHARD, device=999), "a dict of the plan's shard fields"),  # no per-shard device: the plan's devices
    (dict(SHARD, bins_prefix="../etc"), "is not the plan's"),
    (dict(SHARD, shard=-1), "0 or more"),
    ({"bins_prefix": "bins/shard_0000"}, "a dict of the plan's shard fields"),
    ("shard_0", "a dict of the plan's shard fields"),
])
def test_bad_shards_are_refused_before_msame(tmp_path, standins_on_path, calls, workspace, standin_om,
                                             task_log, shard, message):
    store = msame_ws(workspace, standin_om)
    with pytest.raises(Exception, match=message):
        msame_op(standin_om, task_id="m", workspace=store.uri, shard=shard).execute(context={})
    assert calls("msame") == []


def test_shard_without_bins(tmp_path, standins_on_path, workspace, standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    shard = dict(SHARD, shard=3, bins_prefix="bins/shard_0003")
    with pytest.raises(AirflowFailException, match="no input bins under bins/shard_0003"):
        msame_op(standin_om, task_id="m", workspace=store.uri, shard=shard).execute(context={})


def test_msame_path_parameter(tmp_path, clean_env, workspace, standin_om, task_log):
    """msame given by path (not on PATH), as on a worker where it was built in /opt."""
    from tests.standins.fixtures import STANDINS

    store = msame_ws(workspace, standin_om)
    tool = tmp_path / "opt" / "msame"
    tool.parent.mkdir()
    shutil.copy(STANDINS / "msame", tool)
    op = msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD, msame_path=str(tool))
    assert op.execute(context={})["grids"] == 3


def test_msame_gets_the_cann_environment_when_set_env_exists(tmp_path, fake_toolkit, calls, workspace,
                                                             standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD, om_cann_version="8.0.RC1",
             toolkit_home=str(fake_toolkit)).execute(context={})
    (call,) = calls("msame")
    assert call["ascend_opp_path"] == f"{fake_toolkit}/latest/opp"
    assert any("environment from" in line for line in task_log.lines)
    # the om's CANN beside the one this host loads and its driver: perf.json and a warning line
    tool = json.loads(store.get_bytes("outputs/shard_0000/perf.json"))["tool"]
    assert tool["om_cann_version"] == "8.0.RC1" and tool["host_cann_version"].startswith("7.0.0")
    assert tool["host_driver_version"] in ("unknown", *[ln.split("=", 1)[1].strip() for ln in _driver_info()])
    assert any(line.startswith("om built with CANN 8.0.RC1; this host loads CANN 7.0.0") and "they differ" in line
               for line in task_log.lines)


def _driver_info() -> list[str]:
    from cgan.ascend.toolkit import DRIVER_VERSION_FILE

    try:
        return [ln for ln in DRIVER_VERSION_FILE.read_text().splitlines() if ln.lower().startswith("version=")]
    except OSError:
        return []


def test_the_host_driver_version_is_read_from_its_version_info(tmp_path):
    from cgan.ascend.toolkit import inference_host_versions

    (tmp_path / "version.info").write_text("Version=24.1.rc2\nascendhal_version=7.35.23\n")
    assert inference_host_versions({}, tmp_path / "version.info") == {
        "host_cann_version": "unknown", "host_driver_version": "24.1.rc2"}
    assert inference_host_versions({}, tmp_path / "absent")["host_driver_version"] == "unknown"


def test_msame_without_set_env_uses_the_worker_environment(tmp_path, standins_on_path, calls, workspace,
                                                           standin_om, task_log):
    store = msame_ws(workspace, standin_om)
    msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD,
                           toolkit_home=str(tmp_path / "none")).execute(context={})
    assert calls("msame")[0]["ascend_opp_path"] is None
    assert any("set_env.sh not found" in line for line in task_log.lines)


def test_ais_bench_backend_leases_any_npu_and_renders_while_inferring(tmp_path, workspace, standin_om,
                                                                      ais_bench_api, task_log, monkeypatch):
    """npu_tool=ais_bench: the stand-in ais_bench API in a process of its own, on a leased NPU."""
    from cgan.ascend.lease import lease_device

    monkeypatch.setenv("CGAN_NPU_DEVICES", "0,1")
    monkeypatch.setenv("STANDIN_MSAME_DEVICES", "0,1")
    shard = {"shard": 0, "bins_prefix": "bins/shard_0000", "start": 0, "count": 3, "parity": [2],
             "keep_raw_outputs": False, "devices": None}  # as the plan makes it
    with lease_device(allowed=[0], log=lambda m: None):  # another task holds NPU 0
        result = msame_op(standin_om, task_id="msame_infer", workspace=workspace.uri, shard=shard,
                          npu_tool="ais_bench").execute(context={})
    assert result["device"] == 1 and result["npu_tool"] == "ais_bench" and result["grids"] == 3
    assert workspace.list("outputs/shard_0000") == ["outputs/shard_0000/grid_00000002_output_0.bin",
                                                   "outputs/shard_0000/perf.json", "outputs/shard_0000/render.json"]
    assert list(workspace_pngs(workspace, tmp_path)) == [f"grid_0000000{i}.png" for i in range(3)]
    perf = json.loads(workspace.get_bytes("outputs/shard_0000/perf.json"))
    assert perf["backend"] == "ais_bench" and perf["device"] == f"npu:1@{socket.gethostname()}"
    assert any(line.startswith("leased NPU 1 (device1) on host") for line in task_log.lines)


def test_no_free_npu_fails_naming_host_and_devices_and_keeps_retries(workspace, standin_om, task_log, monkeypatch):
    from cgan.ascend.errors import NoFreeNpu
    from cgan.ascend.lease import lease_device

    monkeypatch.setenv("CGAN_NPU_DEVICES", "2")
    monkeypatch.setenv("CGAN_NPU_LEASE_WAIT_S", "0")
    with lease_device(log=lambda m: None), pytest.raises(NoFreeNpu) as err:  # not AirflowFailException
        msame_op(standin_om, task_id="m", workspace=workspace.uri, shard=SHARD).execute(context={})
    assert f"host {socket.gethostname()}" in str(err.value) and "devices seen 2" in str(err.value)


def test_a_restriction_the_host_cannot_meet_fails_at_once(workspace, standin_om, task_log, monkeypatch):
    monkeypatch.setenv("CGAN_NPU_DEVICES", "0,1")
    with pytest.raises(AirflowFailException, match="has NPUs 0=device0, 1=device1 .*allows only devices 2"):
        msame_op(standin_om, task_id="m", workspace=workspace.uri, shard=SHARD).execute(context={})


def test_an_om_for_another_chip_fails_at_once_naming_both(standins_on_path, calls, workspace, standin_om, task_log,
                                                           monkeypatch):
    """A mixed fleet: the om was built for a 310B, this host has 310P3 chips; no retry bounces."""
    monkeypatch.setenv("STANDIN_NPU_SMI_SAMPLE", "duo_x4.txt")  # 310P3, devices 0..7
    store = msame_ws(workspace, standin_om)
    with pytest.raises(AirflowFailException, match="built for Ascend310B1 but host .* has Ascend310P3"):
        msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD,
                 soc_version="Ascend310B1").execute(context={})
    assert calls("msame") == []
    op = msame_op(standin_om, task_id="m", workspace=store.uri, shard=SHARD, soc_version="Ascend310P3")
    assert op.execute(context={})["device"] == 2


def test_an_unknown_npu_tool_is_refused(workspace, standin_om):
    with pytest.raises(AirflowFailException, match="npu_tool must be one of msame, ais_bench"):
        msame_op(standin_om, task_id="m", workspace=workspace.uri, shard=SHARD, npu_tool="atc").execute(context={})
