"""The committed MNIST classifier (ONNX) that judges which digit a generated image shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgan.paths import MODELS_DIR

DEFAULT_CLASSIFIER = MODELS_DIR / "mnist_classifier.onnx"


@dataclass
class DigitClassifier:
    """Wraps an ONNX Runtime session; `predict` takes digits in [-1, 1]."""

    path: Path
    holdout_accuracy: float | None
    _session: Any  # onnxruntime.InferenceSession (onnxruntime ships no type hints)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CLASSIFIER, threads: int = 1) -> DigitClassifier:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"classifier {path} not found; it ships in models/ (scripts/train_classifier.py "
                "makes it again)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta_path = path.with_suffix(".json")
        holdout = None
        if meta_path.is_file():
            holdout = json.loads(meta_path.read_text()).get("holdout_accuracy")
        return cls(path=path, holdout_accuracy=holdout, _session=session)

    def predict(self, digits: np.ndarray) -> np.ndarray:
        """digits: [N, C, 28, 28] float32 in [-1, 1] (C = 1 or 3) -> predicted labels [N]."""
        if digits.ndim != 4 or digits.shape[2:] != (28, 28):
            raise ValueError(f"expected [N, C, 28, 28] digits, got shape {digits.shape}")
        gray = digits.mean(axis=1, keepdims=True, dtype=np.float32) if digits.shape[1] != 1 else digits
        logits = self._session.run(None, {"digits": np.ascontiguousarray(gray, dtype=np.float32)})[0]
        return logits.argmax(axis=1)
