"""Broken generators for the quality gate's tests, made from the committed one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgan.layout.tensors import NOISE_DIM, NUM_CLASSES


def broken_checkpoint(committed: Path, out: Path, how: str) -> Path:
    """`permuted`: the label columns of the first layer rotated by one (column d draws digit d-1);
    `collapsed`: the noise columns zeroed (one style per digit, whatever the noise)."""
    from cgan.recipe.checkpoint import load_generator, save_generator

    model = load_generator(committed)
    w = model.fc[0].weight.data
    if how == "permuted":
        w[:, NOISE_DIM:] = w[:, NOISE_DIM:][:, np.roll(np.arange(NUM_CLASSES), 1)].clone()
    elif how == "collapsed":
        w[:, :NOISE_DIM] = 0
    else:
        raise ValueError(how)
    return save_generator(model, out)
