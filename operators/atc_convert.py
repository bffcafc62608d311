"""AtcConvertOperator: the workspace's ONNX model -> an om for the run's Ascend SoC, via atc.

Runs on the `ascend` queue (a worker with the CANN toolkit). Downloads `onnx_key` from the
workspace, converts through the conversion cache (an unchanged model on an unchanged toolkit
skips atc), uploads the om to `om_key` and atc's output to `log_key`. atc's output is streamed
into the task log as it comes. Every failure raises the cgan error (AtcError quotes atc's
E-codes and error lines).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, open_artifact_store
from operators.failures import fail_fast_on_bad_input

DEFAULT_TOOLKIT_HOME = "/usr/local/Ascend/ascend-toolkit"
OM_FOLDER = "model"


class AtcConvertOperator(BaseOperator):
    """Convert `model/cgan.onnx` of a workspace to `model/<the om's name>`: `cgan.om`, or the
    `cgan_linux_<arch>.om` newer atc writes (that name says where it runs, so it is kept).

    :param workspace: the run's artifact store URI (file:///abs/dir or s3://bucket/prefix)
    :param soc_version: atc --soc_version, e.g. Ascend310P3 ('Ascend' + npu-smi's Name column)
    :param precision_mode: atc --precision_mode (atc's default is force_fp16;
        must_keep_origin_dtype keeps fp32)
    :param cache_uri: store URI whose `atc-cache/` prefix holds converted oms; default
        CGAN_ARTIFACT_ROOT (cgan.config.artifact_root()), shared by every run's workspace
    :param toolkit_home: folder holding the CANN set_env.sh
    :param atc_from_path: when set_env.sh is missing, use the atc on the worker's PATH
    :param om_key: where the om goes; None (default): `model/` + the name atc gave it
    """

    template_fields: Sequence[str] = (
        "workspace", "soc_version", "precision_mode", "onnx_key", "om_key", "log_key",
        "cache_uri", "toolkit_home", "log_level",
    )
    ui_color = "#fde7e9"

    def __init__(self, *, workspace: str, soc_version: str, precision_mode: str = "force_fp16",
                 onnx_key: str = "model/cgan.onnx", om_key: str | None = None,
                 log_key: str = "model/atc.log", cache_uri: str | None = None,
                 toolkit_home: str = DEFAULT_TOOLKIT_HOME, atc_from_path: bool = False,
                 log_level: str = "error", atc_timeout_s: float | None = None,
                 aws_conn_id: str = DEFAULT_CONN_ID, queue: str = "ascend", **kwargs):
        super().__init__(queue=queue, **kwargs)
        self.workspace = workspace
        self.soc_version = soc_version
        self.precision_mode = precision_mode
        self.onnx_key = onnx_key
        self.om_key = om_key
        self.log_key = log_key
        self.cache_uri = cache_uri
        self.toolkit_home = toolkit_home
        self.atc_from_path = atc_from_path
        self.log_level = log_level
        self.atc_timeout_s = atc_timeout_s
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan import config
        from cgan.artifacts import sha256_file
        from cgan.ascend.atc import AtcOptions
        from cgan.ascend.atc_cache import DEFAULT_PREFIX, AtcCache, convert
        from cgan.ascend.toolkit import locate_toolkit

        options = AtcOptions(self.soc_version, self.precision_mode, self.log_level).validate()
        store = open_artifact_store(self.workspace, self.aws_conn_id)
        cache_store = open_artifact_store(self.cache_uri or config.artifact_root(), self.aws_conn_id)
        toolkit = locate_toolkit(self.toolkit_home, atc_from_path=bool(self.atc_from_path))
        self.log.info("atc %s (toolkit %s, read from %s); cache %s/%s", toolkit.atc, toolkit.version,
                      toolkit.version_source, cache_store.uri, DEFAULT_PREFIX)
        with tempfile.TemporaryDirectory(prefix="cgan-atc-") as tmp_dir:
            tmp = Path(tmp_dir)
            onnx = store.get_file(self.onnx_key, tmp / "cgan.onnx")
            result = convert(onnx, tmp / "om", options, toolkit=toolkit,
                             cache=AtcCache(cache_store, DEFAULT_PREFIX), on_line=self.log.info,
                             timeout_s=self.atc_timeout_s)
            for note in result.notes:
                self.log.info("note: %s", note)
            store.put_bytes(result.log.encode(), self.log_key)
            om_key = self.om_key or f"{OM_FOLDER}/{result.om_path.name}"
            store.put_file(result.om_path, om_key)
            om_sha256 = sha256_file(result.om_path)
        self.log.info("om %s (%s) -> %s", result.om_path.name,
                      "cache hit, atc not run" if result.cache_hit else "converted", om_key)
        return {"om_key": om_key, "cache_hit": result.cache_hit, "cache_key": result.cache_key,
                "log_key": self.log_key, "soc_version": options.soc_version,
                "precision_mode": options.precision_mode, "toolkit_version": result.toolkit_version,
                "om_sha256": om_sha256}
