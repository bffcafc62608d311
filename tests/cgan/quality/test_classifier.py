import json

import numpy as np
import pytest

from cgan.quality.classifier import DEFAULT_CLASSIFIER, DigitClassifier
from cgan.storage.files import sha256_file
from cgan.training.mnist import split_mnist


@pytest.fixture(scope="module")
def classifier():
    return DigitClassifier.load()


@pytest.mark.slow
def test_stated_holdout_accuracy_is_reproduced(classifier):
    """The committed classifier really scores what its metadata says on unseen real digits."""
    split = split_mnist()
    meta = json.loads(DEFAULT_CLASSIFIER.with_suffix(".json").read_text())
    assert meta["data_sha256"] == split.source_sha256
    assert meta["onnx_sha256"] == sha256_file(DEFAULT_CLASSIFIER)
    predicted = classifier.predict(split.holdout_images[:, None])
    measured = float((predicted == split.holdout_labels).mean())
    assert measured == pytest.approx(meta["holdout_accuracy"], abs=1e-9)
    assert classifier.holdout_accuracy == meta["holdout_accuracy"] >= 0.95


def test_rgb_digits_are_read_as_gray(classifier):
    split = split_mnist()
    gray = split.holdout_images[:50, None]
    rgb = np.repeat(gray, 3, axis=1)
    assert np.array_equal(classifier.predict(gray), classifier.predict(rgb))


def test_bad_shape_and_missing_file(classifier, tmp_path):
    with pytest.raises(ValueError, match=r"\[N, C, 28, 28\]"):
        classifier.predict(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(FileNotFoundError, match="train_classifier.py"):
        DigitClassifier.load(tmp_path / "none.onnx")
