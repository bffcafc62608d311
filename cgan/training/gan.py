"""Trains the upstream CGAN (generator + discriminator) with upstream hyper-parameters.

Upstream `CGAN.train`: Adam(2e-4, betas (0.5, 0.999)) for both nets, BCE loss, one D step
(real + fake) then one G step on fresh generator output, noise z ~ U[0, 1)^62.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cgan.layout.tensors import NOISE_DIM, NUM_CLASSES
from cgan.recipe.model import Discriminator, Generator


@dataclass
class GanConfig:
    epochs: int = 50
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    max_steps: int | None = None  # stop early (tests, smoke runs)


@dataclass
class GanHistory:
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, NUM_CLASSES).float()


def train_gan(
    images: np.ndarray,
    labels: np.ndarray,
    config: GanConfig,
    on_epoch: Callable[[int, Generator, GanHistory], None] | None = None,
) -> tuple[Generator, GanHistory]:
    """images: float32 [N, 28, 28] in [-1, 1]; returns the generator in eval mode."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_all = torch.from_numpy(images).unsqueeze(1)
    y_all = torch.from_numpy(labels)
    G, D = Generator(1), Discriminator(1)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=(config.beta1, config.beta2))
    bce = nn.BCELoss()
    history = GanHistory()
    start = time.perf_counter()
    batches = len(x_all) // config.batch_size
    for epoch in range(config.epochs):
        G.train()
        D.train()
        order = torch.randperm(len(x_all), generator=gen)
        for b in range(batches):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = x_all[idx], one_hot(y_all[idx])
            y_maps = y[:, :, None, None].expand(-1, -1, 28, 28)
            z = torch.rand(len(idx), NOISE_DIM, generator=gen)
            real, fake_t = torch.ones(len(idx), 1), torch.zeros(len(idx), 1)

            opt_d.zero_grad()
            fake = G(torch.cat([z, y], 1))
            d_loss = bce(D(x, y_maps), real) + bce(D(fake.detach(), y_maps), fake_t)
            d_loss.backward()
            opt_d.step()

            opt_g.zero_grad()
            fake = G(torch.cat([z, y], 1))
            g_loss = bce(D(fake, y_maps), real)
            g_loss.backward()
            opt_g.step()

            history.d_loss.append(d_loss.item())
            history.g_loss.append(g_loss.item())
            history.steps += 1
            if config.max_steps is not None and history.steps >= config.max_steps:
                break
        history.seconds = time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(epoch + 1, G, history)
        if config.max_steps is not None and history.steps >= config.max_steps:
            break
    G.eval()
    return G, history
