"""AscendInferenceOperator: one shard of input bins through msame or ais_bench on one leased NPU.

Mapped over the run's shards (`.partial(...).expand(shard=...)`) as task `msame_infer`, on the
`ascend` queue and the `ascend_npu` pool (one slot per NPU of the fleet). Downloads the om
(`om_uri`, the atc task's XCom: the conversion cache's copy), leases a free NPU of this worker's
own host (cgan.ascend.lease; the shard's `devices`, when the run names some, restrict the
choice) and runs the shard through `npu_tool` on it (cgan.run.inference.run_shard): msame in
batches of 1,000 bins (output streamed into the task log; each grid rendered and packed as
soon as msame has written it, while msame computes the next) or ais_bench's Python API in a
process of its own that only feeds the NPU (grids rendered here while the NPU computes the next
call). Every failure, exit 0
or not, raises the cgan error quoting the tool's own error lines.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cgan.layout.workspace import shard_perf_key
from operators.base import CganBaseOperator


class AscendInferenceOperator(CganBaseOperator):
    """Run msame or ais_bench over one `shard` of the plan on a leased NPU.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param shard: the mapped argument, a shard of the plan (cgan.run.plan.plan_shards); its
        `parity` and `keep_raw_outputs` say which raw outputs are handed over
    :param om_uri: the om (the atc task's XCom `om_uri`)
    :param om_name: the name atc gave the om (the atc task's XCom `om_name`): `cgan_linux_<arch>.om`
        from newer atc, checked against this host's architecture before the NPU is leased
    :param soc_version: the chip the om was built for (the atc task's XCom `soc_version`): only an
        NPU npu-smi names as that chip is leased; a host with none refuses (OmNotForThisHost)
    :param om_cann_version: the CANN that built the om (the atc task's XCom `toolkit_version`),
        logged and kept in perf.json beside this host's CANN and driver (a warning when they differ)
    :param device: an ACL device id (the Device column of `npu-smi info`, not the NPU column)
        this task must lease, overriding the shard's `devices` restriction (None: the shard's)
    :param msame_path: msame's path, or a name looked up on the worker's PATH
    :param loop: msame --loop, 1..100 (msame ignores it for folder input: one call per bin)
    :param channels: expected output channels (1 or 3); None accepts either, consistently
    :param msame_timeout_s: seconds before msame is killed (None: the task's execution_timeout only)
    :param npu_tool: msame (a process per batch of bins) or ais_bench (its Python API in a process
        of its own: the worker's environment must already hold the CANN libraries)
    :param toolkit_home: folder of the CANN set_env.sh, sourced for msame (msame needs the ACL
        libraries); None (default): the worker's CGAN_ASCEND_TOOLKIT, else the first of
        /usr/local/Ascend/cann and /usr/local/Ascend/ascend-toolkit holding one; with none, the
        worker's own environment is used
    :param bucket: the publish bucket (CGAN_PUBLISH_BUCKET) to stage the grid PNGs in as they are
        rendered; None: the PNGs go into the workspace (as for the `cgan` command line)
    :param run_prefix: the run's prefix in that bucket, `runs/<run key>` (the plan's `run_prefix`)
    :param aws_conn_id: Airflow connection for s3:// stores and the publish bucket
    :param queue: Celery queue of the Ascend workers
    :param pool: Airflow pool with one slot per NPU of the fleet
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "shard", "om_uri", "om_name", "soc_version",
                                      "om_cann_version", "msame_path", "loop", "device", "toolkit_home", "npu_tool",
                                      "bucket", "run_prefix")
    ui_color = "#fde7e9"

    def __init__(self, *, shard: dict, om_uri: str, om_name: str = "cgan.om", soc_version: str | None = None,
                 om_cann_version: str | None = None, msame_path: str = "msame", loop: int = 1,
                 device: int | None = None, channels: int | None = None, msame_timeout_s: float | None = None,
                 toolkit_home: str | None = None, queue: str = "ascend",
                 pool: str = "ascend_npu", npu_tool: str = "msame", bucket: str | None = None,
                 run_prefix: str | None = None, **kwargs):
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.bucket = bucket
        self.run_prefix = run_prefix
        self.npu_tool = npu_tool
        self.shard = shard
        self.om_uri = om_uri
        self.om_name = om_name
        self.soc_version = soc_version
        self.om_cann_version = om_cann_version
        self._versions: dict[str, str] = {}
        self.msame_path = msame_path
        self.loop = loop
        self.device = device
        self.channels = channels
        self.msame_timeout_s = msame_timeout_s
        self.toolkit_home = toolkit_home

    def execute(self, context) -> dict:
        from cgan.ascend.lease import lease_device
        from cgan.ascend.target import check_om_target
        from cgan.ascend.validate import check_device, check_soc_version
        from cgan.run.inference import run_shard
        from cgan.run.shard import Shard
        from operators.artifact_store import open_pack_stager

        shard = Shard.from_xcom(self.shard)
        tool = check_npu_tool(self.npu_tool)
        om_name = _om_name(self.om_name)
        soc = check_soc_version(self.soc_version) if self.soc_version not in (None, "") else None
        check_om_target(om_name)  # before the om is fetched or an NPU leased
        override = None if self.device in (None, "") else [check_device(_int(self.device, "device"))]
        allowed = override or (list(shard.devices) if shard.devices else None)
        with tempfile.TemporaryDirectory(prefix="cgan-npu-") as tmp_dir:
            tmp = Path(tmp_dir)
            om = self.fetch(self.om_uri, tmp / "model" / om_name)
            leases = []

            def on_npu(bins: Path, out: Path, on_output):
                with lease_device(allowed=allowed, soc_version=soc, log=self.log.info) as lease:
                    leases.append(lease)
                    self.log.info("Shard %d through %s on NPU %d of host %s", shard.index, tool, lease.device,
                                  lease.host)
                    run, files = (self._ais_bench(om, bins, out, lease, on_output, shard.handed_stems)
                                  if tool == "ais_bench"
                                  else self._msame(om, bins, out, lease, on_output))
                run.perf.device = lease.label  # npu:<id>@<host>: the device and the host it belongs to
                run.perf.tool.update(self._versions)
                run.perf.write(run.output_dir)
                return run, files

            result = run_shard(self.store, shard, tmp, on_npu,
                               stager=open_pack_stager(self.bucket, self.run_prefix, self.aws_conn_id),
                               progress=self._progress, log=self.log.info,
                               bins_pack=tool == "ais_bench")  # read in place; msame reads a folder
        perf, lease = result.perf, leases[0]
        self.log.info("Shard %d done on %s with %s: %.3f ms per call (median %.3f, p99 %.3f), %.1f grids/s; "
                      "%d grid PNG(s) rendered here, %d raw output(s) kept", shard.index, lease.label, tool,
                      perf.latency_ms["mean"], perf.latency_ms["median"], perf.latency_ms["p99"],
                      perf.grids_per_s, result.tally["grids"], result.raw_outputs_kept)
        return {**result.as_xcom(), "perf_key": shard_perf_key(shard.index), "device": lease.device,
                "host": lease.host, "npu_tool": tool}

    def _msame(self, om: Path, bins: Path, out: Path, lease, on_output):
        """msame over the bins in batches (the lease's lock passed to each process); each grid is
        rendered as soon as msame has written it (cgan.ascend.msame.run_msame_batches)."""
        from cgan.ascend.msame import run_msame_batches
        from cgan.ascend.msame_log import TaskLogLines
        from cgan.ascend.toolkit import runtime_env

        env, where = runtime_env(self.toolkit_home)
        self.log.info("msame %s", where)
        self._record_versions(env)
        run = run_msame_batches(om, bins, out, on_output=on_output, device=lease.device, loop=_int(self.loop, "loop"),
                                msame=self.msame_path, channels=self.channels, env=env,
                                on_line=TaskLogLines(self.log.info),  # per-file lines summed up; all in msame.log
                                timeout_s=self.msame_timeout_s, pass_fds=(lease.fd,),
                                npu_smi=None)  # the lease checked the device against the same inventory
        for line in run.warnings:
            self.log.warning("msame printed an [ERROR] line that is not a failure (kept in perf.json "
                             "notes and msame.log): %s", line)
        return run, [run.log_path]

    def _ais_bench(self, om: Path, bins, out: Path, lease, on_output, handed_stems):
        """ais_bench's Python API in a process of its own (cgan.ascend.ais_bench), reading the shard's
        bins pack in place; each grid rendered here while the NPU computes the next."""
        from cgan.ascend.ais_bench import run_ais_bench

        self._record_versions(os.environ)  # the API runs in this process, on its environment
        return run_ais_bench(om, bins, out, device=lease.device, progress=self._progress, on_output=on_output,
                             pass_fds=(lease.fd,),  # the lease's lock held by the NPU's process too
                             write_stems=handed_stems if on_output is not None else None), []

    def _record_versions(self, env) -> None:
        """This host's CANN and driver, beside the om's CANN (perf.json `tool`, the task log)."""
        from cgan.ascend.toolkit import UNKNOWN_VERSION, inference_host_versions

        versions = inference_host_versions(env)
        om = str(self.om_cann_version or UNKNOWN_VERSION)
        self._versions = {"om_cann_version": om, **versions}
        host = versions["host_cann_version"]
        line = (f"om built with CANN {om}; this host loads CANN {host}, driver "
                f"{versions['host_driver_version']}")
        if UNKNOWN_VERSION not in (om, host) and om.split()[0] != host.split()[0]:
            self.log.warning("%s: they differ; if the om fails to load, convert it again with this host's CANN", line)
        else:
            self.log.info("%s", line)

    def _progress(self, done: int, total: int) -> None:
        from cgan.progress import is_tenth

        if is_tenth(done, total):
            self.log.info("grids %d/%d", done, total)


def _int(value, name: str) -> int:
    """Template-rendered values arrive as strings ("1"); bool is not an integer here."""
    from cgan.ascend.errors import AscendError

    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AscendError(f"{name} must be an integer, got {value!r}")
    return value


def check_npu_tool(value) -> str:
    from cgan.ascend.errors import AscendError
    from cgan.run.plan import NPU_TOOLS

    if value not in NPU_TOOLS:
        raise AscendError(f"npu_tool must be one of {', '.join(NPU_TOOLS)}, got {value!r}")
    return value


def _om_name(name) -> str:
    """The om's file name as atc gave it: one path part ending in .om (never a path)."""
    from cgan.ascend.errors import AscendError
    from cgan.storage.keys import KEY_PART_RE

    if not isinstance(name, str) or not name.endswith(".om") or not KEY_PART_RE.match(name) or name == ".om":
        raise AscendError(f"om_name must be the om's file name (e.g. cgan.om or cgan_linux_x86_64.om), got {name!r}")
    return name
