"""ExportOnnxOperator: checkpoint -> ONNX (onnxsim, checked), stored once per content.

The exported model lives in the model store under the artifact root (cgan.recipe.model_store:
`models/<key>/cgan.onnx`, key = checkpoint sha256 + export settings + exporter versions), not
in the run's workspace: a run whose checkpoint and settings are unchanged reuses the stored
file (checked against its sha256) without exporting. Downstream tasks get its URI by XCom.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from operators.base import CganBaseOperator


class ExportOnnxOperator(CganBaseOperator):
    """Export the run's checkpoint to ONNX, or reuse the stored export of the same content.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param checkpoint: generator state_dict: a path relative to the project root, or s3://bucket/key
    :param batch: rows per call of the exported model (a multiple of 100)
    :param opset: ONNX opset (11 = the recipe's, parsed by every atc since CANN 5.x)
    :param model_store_uri: store under which `models/` holds exported models; default
        CGAN_ARTIFACT_ROOT (cgan.settings.artifact_root()), shared by every run
    :param aws_conn_id: Airflow connection for s3:// stores and checkpoints
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "checkpoint", "batch", "opset",
                                      "model_store_uri")
    ui_color = "#e8f0fe"

    def __init__(self, *, checkpoint: str, batch: int = 100, opset: int = 11, model_store_uri: str | None = None,
                 **kwargs):
        kwargs.setdefault("multiple_outputs", True)  # downstream tasks take one key (the model URI)
        super().__init__(**kwargs)
        self.checkpoint = checkpoint
        self.batch = batch
        self.opset = opset
        self.model_store_uri = model_store_uri

    def execute(self, context) -> dict:
        from cgan import settings
        from cgan.recipe.export import export_onnx, validate_batch
        from cgan.recipe.model_store import ModelStore, model_key
        from cgan.storage.files import sha256_file

        batch, opset = validate_batch(int(self.batch)), int(self.opset)
        models = ModelStore(self.open_store(self.model_store_uri or settings.artifact_root()))
        with tempfile.TemporaryDirectory(prefix="cgan-export-") as tmp:
            checkpoint = self.local_checkpoint(self.checkpoint, tmp)
            checkpoint_sha = sha256_file(checkpoint)
            key = model_key(checkpoint_sha, batch=batch, opset=opset)
            found = models.fetch(key, Path(tmp) / "stored.onnx")
            hit = found is not None
            if found is None:
                self.log.info("Exporting %s to ONNX (batch %s, opset %s)", self.checkpoint, batch, opset)
                result = export_onnx(checkpoint, f"{tmp}/cgan.onnx", batch=batch, opset=opset)
                entry = models.put(key, Path(result.onnx_path), {
                    "checkpoint_sha256": checkpoint_sha, "channels": result.channels, "batch": result.batch,
                    "opset": result.opset, "simplified": result.simplified, "max_abs_err": result.max_abs_err,
                })
            else:
                entry = found
                self.log.info("Model store hit %s: the export of this checkpoint and settings from %s is "
                              "reused, not exported again", key, entry.get("created", "?"))
        self.log.info("C=%d model %s (ONNX Runtime vs PyTorch max abs error %.3g)", entry["channels"],
                      models.onnx_uri(key), entry["max_abs_err"])
        return {
            "onnx_uri": models.onnx_uri(key), "model_key": key, "export_reused": hit,
            "onnx_sha256": entry["onnx_sha256"], "checkpoint_sha256": checkpoint_sha,
            "channels": entry["channels"], "batch": entry["batch"], "opset": entry["opset"],
            "export_max_abs_err": entry["max_abs_err"],
        }
