"""AtcConvertOperator: the run's exported ONNX -> an om for the run's Ascend SoC, via atc.

Runs on the `ascend` queue (a worker with the CANN toolkit). Downloads the ONNX from the model
store (`onnx_uri`, the export task's XCom), converts through the conversion cache (an unchanged
model on an unchanged toolkit skips atc), and leaves the om where the cache keeps it, once per
content (`atc-cache/<key>/model.om`): its URI is the task's XCom `om_uri`, and the name atc gave it
(`cgan.om`, or `cgan_linux_<arch>.om` from newer atc: it runs only there) `om_name`; nothing is copied
into the run's workspace but atc's output (`logs/atc.log`), and the om itself (`om/<name>`) where the
cache refuses to keep it (the toolkit's version is unknown). atc's output is streamed into the
task log as it comes. Every failure raises the cgan error (AtcError quotes atc's E-codes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from operators.base import CganBaseOperator


class AtcConvertOperator(CganBaseOperator):
    """Convert the exported ONNX (`onnx_uri`) to an om in the conversion cache.

    :param workspace: the run's workspace URI (see CganBaseOperator); receives logs/atc.log
    :param onnx_uri: the exported ONNX (the export task's XCom `onnx_uri`)
    :param soc_version: atc --soc_version, e.g. Ascend310P3 ('Ascend' + npu-smi's Name column)
    :param precision_mode: atc --precision_mode (atc's default is force_fp16;
        must_keep_origin_dtype keeps fp32)
    :param cache_uri: store URI whose `atc-cache/` prefix holds converted oms; default
        CGAN_ARTIFACT_ROOT (cgan.settings.artifact_root()), shared by every run
    :param toolkit_home: folder holding the CANN set_env.sh; None (default): the worker's
        CGAN_ASCEND_TOOLKIT, else the first of /usr/local/Ascend/cann (CANN 8.5+) and
        /usr/local/Ascend/ascend-toolkit holding one (cgan.ascend.toolkit.find_toolkit_home)
    :param atc_from_path: when set_env.sh is missing, use the atc on the worker's PATH
    :param log_level: atc --log (error, warning, info, debug, null)
    :param atc_timeout_s: seconds before atc is killed (None: the task's execution_timeout only)
    :param aws_conn_id: Airflow connection for s3:// stores
    :param queue: Celery queue of the Ascend workers
    """

    template_fields: Sequence[str] = (
        *CganBaseOperator.template_fields, "onnx_uri", "soc_version", "precision_mode", "cache_uri",
        "toolkit_home", "log_level",
    )
    ui_color = "#fde7e9"

    def __init__(self, *, onnx_uri: str, soc_version: str, precision_mode: str = "force_fp16",
                 cache_uri: str | None = None, toolkit_home: str | None = None,
                 atc_from_path: bool = False, log_level: str = "error", atc_timeout_s: float | None = None,
                 queue: str = "ascend", **kwargs):
        kwargs.setdefault("multiple_outputs", True)  # downstream tasks take one key (the model URI)
        super().__init__(queue=queue, **kwargs)
        self.onnx_uri = onnx_uri
        self.soc_version = soc_version
        self.precision_mode = precision_mode
        self.cache_uri = cache_uri
        self.toolkit_home = toolkit_home
        self.atc_from_path = atc_from_path
        self.log_level = log_level
        self.atc_timeout_s = atc_timeout_s

    def execute(self, context) -> dict:
        from cgan import settings
        from cgan.ascend.atc import AtcOptions
        from cgan.ascend.atc_cache import DEFAULT_PREFIX, AtcCache, convert
        from cgan.ascend.toolkit import locate_toolkit
        from cgan.layout.workspace import ATC_LOG_KEY, UNCACHED_OM_PREFIX
        from cgan.storage.files import sha256_file
        from cgan.storage.keys import join

        options = AtcOptions(self.soc_version, self.precision_mode, self.log_level).validate()
        cache = AtcCache(self.open_store(self.cache_uri or settings.artifact_root()), DEFAULT_PREFIX)
        toolkit = locate_toolkit(self.toolkit_home, atc_from_path=bool(self.atc_from_path))
        self.log.info("atc %s (toolkit %s, read from %s); cache %s/%s", toolkit.atc, toolkit.version,
                      toolkit.version_source, cache.store.uri, DEFAULT_PREFIX)
        with tempfile.TemporaryDirectory(prefix="cgan-atc-") as tmp_dir:
            tmp = Path(tmp_dir)
            onnx = self.fetch(self.onnx_uri, tmp / "cgan.onnx")
            result = convert(onnx, tmp / "om", options, toolkit=toolkit, cache=cache, on_line=self.log.info,
                             timeout_s=self.atc_timeout_s)
            for note in result.notes:
                self.log.info("note: %s", note)
            self.store.put_bytes(result.log.encode(), ATC_LOG_KEY)
            om_sha256 = sha256_file(result.om_path)
            if not result.cache_key:  # the cache refused it (toolkit version unknown): the run keeps it
                om_key = join(UNCACHED_OM_PREFIX, result.om_path.name)
                self.store.put_file(result.om_path, om_key)
                om_uri = f"{self.store.uri.rstrip('/')}/{om_key}"
        if result.cache_key:
            om_uri = f"{cache.store.uri.rstrip('/')}/{cache.keys(result.cache_key)[0]}"
        self.log.info("om %s (%s): %s", result.om_path.name,
                      "cache hit, atc not run" if result.cache_hit else "converted", om_uri)
        return {"om_uri": om_uri, "om_name": result.om_path.name, "cache_hit": result.cache_hit,
                "cache_key": result.cache_key,
                "log_key": ATC_LOG_KEY, "soc_version": options.soc_version,
                "precision_mode": options.precision_mode, "toolkit_version": result.toolkit_version,
                "om_sha256": om_sha256}
