"""The quality report (`quality.json`): parity with PyTorch and label accuracy.

- parity_max_abs_err: max |runtime - PyTorch| over the outputs of up to `parity_grids` grids
  (spread evenly over the run), PyTorch fp32 eager running the same input bins.
- label_accuracy / per_class_accuracy: the committed MNIST classifier reads every generated
  digit; a digit counts as correct when it is read as its column's label.
- classifier_holdout_accuracy: the classifier's accuracy on real digits it never trained on
  (measured by scripts/train_classifier.py, stored beside the classifier).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from cgan.artifacts import atomic_write_bytes, sha256_file
from cgan.classifier import DEFAULT_CLASSIFIER, DigitClassifier
from cgan.errors import InputBinError
from cgan.layout import NUM_CLASSES, SAMPLES_PER_GRID
from cgan.outputs import find_run_dir, grid_stem, list_outputs, read_output_bin

QUALITY_NAME = "quality.json"
DEFAULT_PARITY_GRIDS = 32
EXPECTED_LABELS = np.tile(np.arange(NUM_CLASSES), SAMPLES_PER_GRID // NUM_CLASSES)


def evenly_spaced(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def parity_max_abs_err(
    checkpoint: str | os.PathLike, input_dir: Path, outputs: list[Path], parity_grids: int
) -> tuple[float, int]:
    """Max abs error between the given outputs and PyTorch on their input bins."""
    import torch

    from cgan.bins import read_input_bin
    from cgan.checkpoint import load_generator

    model = load_generator(checkpoint)
    worst, chosen = 0.0, evenly_spaced(len(outputs), parity_grids)
    for i in chosen:
        source = input_dir / f"{grid_stem(outputs[i])}.bin"
        if not source.is_file():
            raise InputBinError(f"no input bin {source} for output {outputs[i].name}")
        with torch.inference_mode():
            ref = model(torch.from_numpy(read_input_bin(source))).numpy()
        got = read_output_bin(outputs[i])
        if got.shape != ref.shape:
            raise InputBinError(
                f"{outputs[i].name} has shape {got.shape} but the checkpoint makes {ref.shape}: "
                "outputs and checkpoint belong to different models"
            )
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return worst, len(chosen)


def label_accuracy(
    outputs: list[Path], classifier: DigitClassifier, progress: Callable[[int, int], None] | None = None
) -> tuple[float, dict[str, float], int]:
    correct = np.zeros(NUM_CLASSES, dtype=np.int64)
    total = np.zeros(NUM_CLASSES, dtype=np.int64)
    for n, path in enumerate(outputs, 1):
        hits = classifier.predict(read_output_bin(path)) == EXPECTED_LABELS
        np.add.at(correct, EXPECTED_LABELS, hits)
        np.add.at(total, EXPECTED_LABELS, 1)
        if progress is not None:
            progress(n, len(outputs))
    per_class = {str(d): round(float(correct[d] / total[d]), 4) for d in range(NUM_CLASSES)}
    return round(float(correct.sum() / total.sum()), 4), per_class, int(total.sum())


def quality_report(
    checkpoint: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    classifier_path: str | os.PathLike = DEFAULT_CLASSIFIER,
    parity_grids: int = DEFAULT_PARITY_GRIDS,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    if not isinstance(parity_grids, int) or parity_grids < 1:
        raise ValueError(f"parity_grids must be a positive integer, got {parity_grids!r}")
    run_dir = find_run_dir(output_dir)
    outputs = list_outputs(run_dir)
    classifier = DigitClassifier.load(classifier_path)
    accuracy, per_class, digits = label_accuracy(outputs, classifier, progress)
    parity, checked = parity_max_abs_err(checkpoint, Path(input_dir), outputs, parity_grids)
    return {
        "label_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "parity_max_abs_err": parity,
        "classifier_holdout_accuracy": classifier.holdout_accuracy,
        "grids": len(outputs),
        "digits_judged": digits,
        "parity_grids_checked": checked,
        "parity_reference": "PyTorch fp32 eager on the same input bins",
        "classifier": {"path": Path(classifier_path).name, "sha256": sha256_file(classifier_path)},
    }


def write_report(report: dict, folder: str | os.PathLike) -> Path:
    return atomic_write_bytes(Path(folder) / QUALITY_NAME, json.dumps(report, indent=2).encode())
