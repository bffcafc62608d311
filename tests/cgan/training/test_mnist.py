import numpy as np
import pytest

from cgan.training.mnist import HOLDOUT_PER_CLASS, split_mnist


@pytest.mark.slow
def test_split_is_disjoint_balanced_and_in_generator_range():
    split = split_mnist()
    assert len(split.holdout_labels) == 10 * HOLDOUT_PER_CLASS
    assert np.array_equal(np.bincount(split.holdout_labels), [HOLDOUT_PER_CLASS] * 10)
    assert len(split.train_labels) + len(split.holdout_labels) == 5000
    assert split.train_images.min() == -1.0 and split.train_images.max() == 1.0
    train = {img.tobytes() for img in split.train_images}
    assert not any(img.tobytes() in train for img in split.holdout_images)
    assert split_mnist().source_sha256 == split.source_sha256
