"""The quality report (`quality.json`): parity with PyTorch and label accuracy.

- parity_max_abs_err / parity_mean_abs_err: max and mean |runtime - PyTorch| over the outputs
  of up to `parity_grids` grids (spread evenly over the run), PyTorch fp32 eager running the
  same input bins: for an int8 run, its pixel error against fp32.
- precision: what the runtime computed in (fp32, int8; None when the runtime did not say, as
  msame); parity_limits / parity_ok: the parity bounds of that precision and whether the run
  kept them. Every other rule (the classifier, the labels) is the same for every precision.
- label_accuracy / per_class_accuracy: the committed MNIST classifier reads the generated digits
  of the run's label sample (`label_sample`: LABEL_SAMPLE_GRIDS grids spread over the run, every
  grid of a smaller run); a digit counts as correct when it is read as its column's label.
  `label_accuracy_ci95` / `per_class_accuracy_ci95` bound what judging every digit would give
  (see `label_intervals`).
- classifier_holdout_accuracy: the classifier's accuracy on real digits it never trained on
  (measured by scripts/train_classifier.py, stored beside the classifier).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cgan.errors import InputBinError
from cgan.layout.tensors import NUM_CLASSES, SAMPLES_PER_GRID
from cgan.quality.classifier import DEFAULT_CLASSIFIER, DigitClassifier
from cgan.recipe.outputs import find_run_dir, grid_stem, list_outputs, read_output_bin
from cgan.storage.files import atomic_write_bytes, sha256_file

if TYPE_CHECKING:
    from cgan.recipe.model import Generator  # imports torch: for types only

QUALITY_NAME = "quality.json"
DEFAULT_PARITY_GRIDS = 32
# Grids whose 100 digits are judged per run: 2,000 digits per class. The 95% interval of a class's
# accuracy is then at most +-2.2 points (p = 0.5) and +-1.0 at p = 0.95, and of the overall accuracy
# at most +-0.7 (rows as clusters, see label_intervals): enough for a gate, at 200 x 3.9 ms of
# classifier CPU per run instead of 3.9 ms for every grid.
LABEL_SAMPLE_GRIDS = 200
Z95 = 1.959964
EXPECTED_LABELS = np.tile(np.arange(NUM_CLASSES), SAMPLES_PER_GRID // NUM_CLASSES)
# Parity bounds per precision (|output - PyTorch fp32|, outputs in (-1, 1)). fp32: rounding only.
# int8: measured max 0.18-0.30, mean 0.004-0.006 on the committed generator (docs/performance.md).
PARITY_LIMITS = {
    "fp32": {"max_abs": 1e-3, "mean_abs": 1e-4},
    "int8": {"max_abs": 0.5, "mean_abs": 0.01},
}


def label_sample(num_grids: int, sample_grids: int = LABEL_SAMPLE_GRIDS) -> list[int]:
    """The grids whose digits are judged: `sample_grids` spread evenly over the run (all if fewer)."""
    return evenly_spaced(num_grids, sample_grids)


def wilson(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if total <= 0:
        return (0.0, 1.0)
    p, z2 = correct / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * ((p * (1 - p) / total + z2 / (4 * total * total)) ** 0.5) / (1 + z2 / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def label_intervals(correct: np.ndarray, total: np.ndarray, row_sq: int | None, z: float = Z95) -> dict:
    """95% intervals of the per-class and overall label accuracy of a judged sample.

    Per class, the digits come from different noise vectors (one per grid row), so they are
    independent draws: Wilson interval. Overall, a row's 10 digits share one noise vector, so the
    rows are the independent units: the mean of the row hit counts with its standard error
    (`row_sq` = sum of squared row hit counts); without it, Wilson on the digits."""
    per_class = {str(d): [round(v, 4) for v in wilson(int(correct[d]), int(total[d]), z)]
                 for d in range(NUM_CLASSES)}
    hits, digits = int(correct.sum()), int(total.sum())
    rows = digits // NUM_CLASSES
    if row_sq is not None and rows > 1:
        mean = hits / rows
        var = max(0.0, (row_sq - hits * hits / rows) / (rows - 1))
        half = z * (var / rows) ** 0.5 / NUM_CLASSES
        acc = mean / NUM_CLASSES
        overall = (max(0.0, acc - half), min(1.0, acc + half))
    else:
        overall = wilson(hits, digits, z)
    return {"overall": [round(v, 4) for v in overall], "per_class": per_class}


def row_square_sum(hits: np.ndarray) -> int:
    """Sum over a grid's 10 rows of (digits read right in the row)^2."""
    rows = np.asarray(hits, dtype=np.int64).reshape(-1, NUM_CLASSES).sum(axis=1)
    return int((rows * rows).sum())


def evenly_spaced(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


class QualityAccumulator:
    """Builds quality.json one output bin at a time, so memory does not grow with the run.

    `checkpoint` is needed only for parity checks (None: label counts only, as a shard's renderer)."""

    def __init__(self, checkpoint: str | os.PathLike | None,
                 classifier_path: str | os.PathLike = DEFAULT_CLASSIFIER, precision: str | None = "fp32"):
        self.checkpoint = checkpoint
        self.precision = precision
        self.classifier_path = Path(classifier_path)
        self.classifier = DigitClassifier.load(self.classifier_path)
        self.correct = np.zeros(NUM_CLASSES, dtype=np.int64)
        self.total = np.zeros(NUM_CLASSES, dtype=np.int64)
        self.grids = 0
        self.row_sq: int | None = 0  # sum of squared hit counts per grid row (None: unknown)
        self.parity = 0.0
        self.parity_abs_sum = 0.0
        self.parity_values = 0
        self.parity_checked = 0
        self._model: Generator | None = None

    @functools.cached_property
    def classifier_sha256(self) -> str:
        return sha256_file(self.classifier_path)

    def judge(self, output: Path) -> np.ndarray:
        """Which of a grid's 100 digits the classifier reads as their column's label (thread-safe)."""
        return self.judge_samples(read_output_bin(output))

    def judge_samples(self, samples: np.ndarray) -> np.ndarray:
        """`judge` for a grid already in memory ([100, C, 28, 28])."""
        return self.classifier.predict(samples) == EXPECTED_LABELS

    def record(self, hits: np.ndarray | None) -> None:
        """Count one grid; `hits` None: the grid was made but not judged (outside the label sample)."""
        if hits is not None:
            np.add.at(self.correct, EXPECTED_LABELS, hits)
            np.add.at(self.total, EXPECTED_LABELS, 1)
            if self.row_sq is not None:
                self.row_sq += row_square_sum(hits)
        self.grids += 1

    def merge(self, correct: list[int], total: list[int], grids: int, row_sq: int | None = None) -> None:
        """Add a tally made elsewhere with the same classifier (a shard's render.json)."""
        self.correct += np.asarray(correct, dtype=np.int64)
        self.total += np.asarray(total, dtype=np.int64)
        self.grids += grids
        self.row_sq = None if row_sq is None or self.row_sq is None else self.row_sq + int(row_sq)

    def add_labels(self, output: Path) -> None:
        self.record(self.judge(output))

    def add_parity(self, output: Path, source: Path) -> None:
        import torch

        from cgan.recipe.bins import read_input_bin
        from cgan.recipe.checkpoint import load_generator

        if self.checkpoint is None:
            raise ValueError("parity checks need the checkpoint the outputs were made with")
        if not source.is_file():
            raise InputBinError(f"no input bin {source} for output {output.name}")
        if self._model is None:
            self._model = load_generator(self.checkpoint)
        with torch.inference_mode():
            ref = self._model(torch.from_numpy(read_input_bin(source))).numpy()
        got = read_output_bin(output)
        if got.shape != ref.shape:
            raise InputBinError(
                f"{output.name} has shape {got.shape} but the checkpoint makes {ref.shape}: "
                "outputs and checkpoint belong to different models"
            )
        err = np.abs(got - ref)
        self.parity = max(self.parity, float(err.max()))
        self.parity_abs_sum += float(err.sum(dtype=np.float64))
        self.parity_values += err.size
        self.parity_checked += 1

    def report(self) -> dict:
        if not self.grids:
            raise InputBinError("no output bins were judged: nothing to report")
        if not self.total.all():
            raise InputBinError("no digit of some class was judged: nothing to report")
        per_class = {str(d): round(float(self.correct[d] / self.total[d]), 4) for d in range(NUM_CLASSES)}
        mean_abs = self.parity_abs_sum / self.parity_values if self.parity_values else 0.0
        limits = PARITY_LIMITS.get(self.precision) if self.precision else None
        parity_ok = None
        if limits is not None and self.parity_checked:
            parity_ok = self.parity <= limits["max_abs"] and mean_abs <= limits["mean_abs"]
        ci = label_intervals(self.correct, self.total, self.row_sq)
        return {
            "precision": self.precision,
            "label_accuracy": round(float(self.correct.sum() / self.total.sum()), 4),
            "per_class_accuracy": per_class,
            "label_accuracy_ci95": ci["overall"],
            "per_class_accuracy_ci95": ci["per_class"],
            "label_sample": {"grids_judged": int(self.total.sum()) // SAMPLES_PER_GRID, "grids": self.grids,
                             "confidence": 0.95,
                             "method": "per class: Wilson; overall: grid rows as clusters"
                                       if self.row_sq is not None else "Wilson on digits"},
            "parity_max_abs_err": self.parity,
            "parity_mean_abs_err": mean_abs,
            "parity_limits": limits,
            "parity_ok": parity_ok,
            "classifier_holdout_accuracy": self.classifier.holdout_accuracy,
            "grids": self.grids,
            "digits_judged": int(self.total.sum()),
            "parity_grids_checked": self.parity_checked,
            "parity_reference": "PyTorch fp32 eager on the same input bins",
            "classifier": {"path": self.classifier_path.name, "sha256": self.classifier_sha256},
        }


def quality_report(
    checkpoint: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    classifier_path: str | os.PathLike = DEFAULT_CLASSIFIER,
    parity_grids: int = DEFAULT_PARITY_GRIDS,
    progress: Callable[[int, int], None] | None = None,
    precision: str | None = "fp32",
) -> dict:
    """quality.json of one local run folder (or the single run under an output root)."""
    if not isinstance(parity_grids, int) or parity_grids < 1:
        raise ValueError(f"parity_grids must be a positive integer, got {parity_grids!r}")
    outputs = list_outputs(find_run_dir(output_dir))
    acc = QualityAccumulator(checkpoint, classifier_path, precision)
    for n, path in enumerate(outputs, 1):
        acc.add_labels(path)
        if progress is not None:
            progress(n, len(outputs))
    for i in evenly_spaced(len(outputs), parity_grids):
        acc.add_parity(outputs[i], Path(input_dir) / f"{grid_stem(outputs[i])}.bin")
    return acc.report()


def write_report(report: dict, folder: str | os.PathLike) -> Path:
    return atomic_write_bytes(Path(folder) / QUALITY_NAME, json.dumps(report, indent=2).encode())
