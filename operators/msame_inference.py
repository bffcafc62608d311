"""MsameInferenceOperator: one shard of input bins through msame on one NPU.

Mapped over the run's shards (`.partial(...).expand(shard=...)`), on the `ascend` queue and
the `ascend_npu` pool (one slot per NPU). Downloads the om and the shard's bins from the
workspace, runs msame on the shard's device with its output streamed into the task log, and
uploads the output bins, msame.log and perf.json (last) to `outputs/shard_NNNN/`, a prefix
emptied first so a retry never mixes its outputs with an earlier try's. Every failure, exit 0
or not, raises the cgan error quoting msame's own error lines.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, open_artifact_store
from operators.failures import fail_fast_on_bad_input


class MsameInferenceOperator(BaseOperator):
    """Run msame over `shard` = {"shard": int, "bins_prefix": "bins/shard_0000", "device": int}.

    :param workspace: the run's artifact store URI (file:///abs/dir or s3://bucket/prefix)
    :param shard: the mapped argument; other keys (start, count) are ignored
    :param device: an ACL device id (the Device column of `npu-smi info`, not the NPU column)
        overriding the shard's own (None: the shard's)
    :param om_key: the om in the workspace; the DAG passes atc_convert's `om_key`, which keeps
        the name atc gave it (`cgan_linux_<arch>.om` on newer atc)
    :param msame_path: msame's path, or a name looked up on the worker's PATH
    :param loop: msame --loop, 1..100 (msame ignores it for folder input: one call per bin)
    :param channels: expected output channels (1 or 3); None accepts either, consistently
    :param toolkit_home: folder of the CANN set_env.sh, sourced for msame when present (msame
        needs the ACL libraries); otherwise the worker's own environment is used
    """

    template_fields: Sequence[str] = ("workspace", "shard", "om_key", "msame_path", "loop", "device",
                                      "toolkit_home")
    ui_color = "#fde7e9"

    def __init__(self, *, workspace: str, shard: dict, om_key: str = "model/cgan.om",
                 msame_path: str = "msame", loop: int = 1, device: int | None = None,
                 channels: int | None = None, msame_timeout_s: float | None = None,
                 toolkit_home: str = "/usr/local/Ascend/ascend-toolkit", aws_conn_id: str = DEFAULT_CONN_ID,
                 queue: str = "ascend", pool: str = "ascend_npu",
                 **kwargs):
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.workspace = workspace
        self.shard = shard
        self.om_key = om_key
        self.msame_path = msame_path
        self.loop = loop
        self.device = device
        self.channels = channels
        self.msame_timeout_s = msame_timeout_s
        self.toolkit_home = toolkit_home
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan.ascend.msame import LOG_NAME, run_msame
        from cgan.ascend.shards import outputs_prefix
        from cgan.ascend.toolkit import runtime_env
        from cgan.perf import PERF_NAME
        from cgan.store import download_keys, upload_dir

        index, bins_prefix, device = parse_shard(self.shard, self.device)
        loop = _int(self.loop, "loop")
        env, where = runtime_env(self.toolkit_home)
        self.log.info("msame %s", where)
        store = open_artifact_store(self.workspace, self.aws_conn_id)
        prefix = outputs_prefix(index)
        store.delete_prefix(prefix)
        with tempfile.TemporaryDirectory(prefix="cgan-msame-") as tmp_dir:
            tmp = Path(tmp_dir)
            om = store.get_file(self.om_key, tmp / "model" / self.om_key.rsplit("/", 1)[-1])
            keys = [k for k in store.list(bins_prefix) if k.endswith(".bin")]
            if not keys:
                from cgan.ascend.errors import AscendError

                raise AscendError(f"shard {index}: no input bins under {bins_prefix}/ in {store.uri}")
            download_keys(store, keys, tmp / "bins")
            self.log.info("Shard %d: %d bin(s) through msame on device %d", index, len(keys), device)
            run = run_msame(om, tmp / "bins", tmp / "out", device=device, loop=loop,
                            msame=self.msame_path, channels=self.channels, env=env, on_line=self.log.info,
                            timeout_s=self.msame_timeout_s)
            upload_dir(store, run.output_dir, prefix, "*_output_0.bin")
            store.put_file(run.log_path, f"{prefix}/{LOG_NAME}")
            perf_key = store.put_file(run.output_dir / PERF_NAME, f"{prefix}/{PERF_NAME}")
        for line in run.warnings:
            self.log.warning("msame printed an [ERROR] line that is not a failure (kept in perf.json "
                             "notes and msame.log): %s", line)
        perf = run.perf
        self.log.info("Shard %d done on device %d: %.3f ms per call (median %.3f, p99 %.3f), %.1f grids/s",
                      index, device, perf.latency_ms["mean"], perf.latency_ms["median"],
                      perf.latency_ms["p99"], perf.grids_per_s)
        return {"shard": index, "outputs_prefix": prefix, "perf_key": perf_key, "grids": perf.grids,
                "device": device, "grids_per_s": perf.grids_per_s}


def _int(value, name: str) -> int:
    """Template-rendered values arrive as strings ("1"); bool is not an integer here."""
    from cgan.ascend.errors import AscendError

    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AscendError(f"{name} must be an integer, got {value!r}")
    return value


def parse_shard(shard, device_override=None) -> tuple[int, str, int]:
    """(index, bins prefix, device) of a shard dict, each checked."""
    from cgan.ascend.errors import AscendError
    from cgan.ascend.validate import check_device
    from cgan.store import check_key

    if not isinstance(shard, dict) or not {"shard", "bins_prefix"} <= set(shard):
        raise AscendError(f"shard must be a dict with 'shard', 'bins_prefix' and 'device', got {shard!r}")
    index = _int(shard["shard"], "shard")
    if index < 0:
        raise AscendError(f"shard index must be 0 or more, got {index}")
    raw = device_override if device_override not in (None, "") else shard.get("device")
    if raw is None:
        raise AscendError(f"shard {index} names no device (was it planned for the cpu target?)")
    return index, check_key(shard["bins_prefix"]), check_device(_int(raw, "device"))
