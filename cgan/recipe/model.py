"""The upstream CGAN generator and discriminator (znxlwm/pytorch-generative-model-collections).

Architecture of the generator: FC1024_BR-FC7x7x128_BR-(64)4dc2s_BR-(C)4dc2s_S. The state_dict
keys (`fc.0.weight` ... `deconv.3.bias`) match upstream `CGAN_G.pkl` and ModelZoo `CGAN_G.pth`.
Unlike upstream, `forward` takes the already concatenated [z | one-hot] vector, as the Ascend
recipe's exported graph does (one input `image` of shape [B, 72]).
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from cgan.layout.tensors import IMAGE_SIZE, INPUT_DIM, NOISE_DIM, NUM_CLASSES

FEATURE_SIZE = IMAGE_SIZE // 4  # 7
M = TypeVar("M", bound=nn.Module)


class Generator(nn.Module):
    def __init__(self, output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.fc = nn.Sequential(
            nn.Linear(INPUT_DIM, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * FEATURE_SIZE * FEATURE_SIZE),
            nn.BatchNorm1d(128 * FEATURE_SIZE * FEATURE_SIZE),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, output_dim, 4, 2, 1),
            nn.Tanh(),
        )
        initialize_weights(self)

    def forward(self, z_and_label: torch.Tensor) -> torch.Tensor:
        x = self.fc(z_and_label)
        x = x.view(-1, 128, FEATURE_SIZE, FEATURE_SIZE)
        return self.deconv(x)


class Discriminator(nn.Module):
    """Upstream discriminator: image plus label maps -> probability the pair is real."""

    def __init__(self, input_dim: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(input_dim + NUM_CLASSES, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2),
        )
        self.fc = nn.Sequential(
            nn.Linear(128 * FEATURE_SIZE * FEATURE_SIZE, 1024),
            nn.BatchNorm1d(1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 1),
            nn.Sigmoid(),
        )
        initialize_weights(self)

    def forward(self, image: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.cat([image, label_maps], 1))
        x = x.view(-1, 128 * FEATURE_SIZE * FEATURE_SIZE)
        return self.fc(x)


def initialize_weights(net: nn.Module) -> None:
    """Upstream `utils.initialize_weights`: N(0, 0.02) weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.weight.data.normal_(0, 0.02)
            if m.bias is not None:
                m.bias.data.zero_()


def fold_batchnorm(generator: Generator) -> nn.Module:
    """An inference copy of `generator` with each BatchNorm folded into the layer before it.

    Same function in eval mode (up to float rounding), fewer ops: the exported graph runs
    Gemm+ReLU and ConvTranspose+ReLU pairs instead of Gemm, BatchNormalization, ReLU. The
    original module is left untouched.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    if generator.training:
        raise ValueError("fold_batchnorm needs a generator in eval mode (running statistics)")

    fc, deconv = generator.fc, generator.deconv
    folded = Generator(generator.output_dim)
    folded.fc = nn.Sequential(
        fuse_linear_bn_eval(_at(fc, 0, nn.Linear), _at(fc, 1, nn.BatchNorm1d)), nn.ReLU(),
        fuse_linear_bn_eval(_at(fc, 3, nn.Linear), _at(fc, 4, nn.BatchNorm1d)), nn.ReLU(),
    )
    folded.deconv = nn.Sequential(
        fuse_conv_bn_eval(_at(deconv, 0, nn.ConvTranspose2d), _at(deconv, 1, nn.BatchNorm2d), transpose=True),
        nn.ReLU(),
        copy.deepcopy(deconv[3]), nn.Tanh(),
    )
    return folded.eval()


def _at(seq: nn.Sequential, i: int, kind: type[M]) -> M:
    """seq[i], checked to be a `kind` (indexing a Sequential is typed as any Module)."""
    layer = seq[i]
    if not isinstance(layer, kind):
        raise TypeError(f"layer {i} is a {type(layer).__name__}, expected {kind.__name__}")
    return layer


def expected_generator_shapes(output_dim: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a generator state_dict with C = output_dim (buffers included)."""
    return {k: tuple(v.shape) for k, v in Generator(output_dim).state_dict().items()}


__all__ = ["Discriminator", "Generator", "fold_batchnorm", "NOISE_DIM", "expected_generator_shapes"]


def generator_gflop_per_grid(channels: int = 1) -> float:
    """Multiply-adds of the generator for 100 digits, x2 (BN, ReLU, tanh ignored)."""
    macs = 72 * 1024 + 1024 * 6272 + 128 * 64 * 16 * 7 * 7 + 64 * channels * 16 * 14 * 14
    return 2 * macs * 100 / 1e9
