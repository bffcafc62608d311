"""ExportOnnxOperator: checkpoint -> ONNX (onnxsim, checked) -> `model/cgan.onnx` in the workspace."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from airflow.sdk import BaseOperator

from operators.artifact_store import DEFAULT_CONN_ID, fetch_checkpoint, open_artifact_store
from operators.failures import fail_fast_on_bad_input

ONNX_KEY = "model/cgan.onnx"


class ExportOnnxOperator(BaseOperator):
    template_fields: Sequence[str] = ("workspace", "checkpoint", "batch", "opset")
    ui_color = "#e8f0fe"

    def __init__(self, *, workspace: str, checkpoint: str, batch: int = 100, opset: int = 11,
                 aws_conn_id: str = DEFAULT_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.checkpoint = checkpoint
        self.batch = batch
        self.opset = opset
        self.aws_conn_id = aws_conn_id

    @fail_fast_on_bad_input
    def execute(self, context) -> dict:
        from cgan.artifacts import sha256_file
        from cgan.export import export_onnx

        store = open_artifact_store(self.workspace, self.aws_conn_id)
        with tempfile.TemporaryDirectory(prefix="cgan-export-") as tmp:
            checkpoint = fetch_checkpoint(self.checkpoint, tmp, self.aws_conn_id)
            self.log.info("Exporting %s to ONNX (batch %s, opset %s)", self.checkpoint, self.batch, self.opset)
            result = export_onnx(checkpoint, f"{tmp}/cgan.onnx", batch=int(self.batch), opset=int(self.opset))
            store.put_file(result.onnx_path, ONNX_KEY)
            checkpoint_sha = sha256_file(checkpoint)
        self.log.info(
            "Exported C=%d model to %s/%s: simplified=%s, ONNX Runtime vs PyTorch max abs error %.3g",
            result.channels, store.uri, ONNX_KEY, result.simplified, result.max_abs_err,
        )
        return {
            "onnx_key": ONNX_KEY, "onnx_sha256": result.sha256, "checkpoint_sha256": checkpoint_sha,
            "channels": result.channels, "batch": result.batch, "opset": result.opset,
            "export_max_abs_err": result.max_abs_err,
        }
