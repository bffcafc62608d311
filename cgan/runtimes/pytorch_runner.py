"""PyTorch eager on the CPU: the reference the other runtimes are compared with."""

from __future__ import annotations

import os

from cgan.layout.tensors import SAMPLES_PER_GRID
from cgan.runtimes.folder_runner import InferenceRun, Progress, run_folder


def torch_execute(model, threads: int | None = 1):
    """A numpy -> numpy forward function of a generator, under inference_mode."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    def execute(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return execute


def run_pytorch(
    checkpoint: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    *,
    threads: int = 1,
    warmup: int = 1,
    batch: int = SAMPLES_PER_GRID,
    progress: Progress | None = None,
) -> InferenceRun:
    import torch

    from cgan.recipe.checkpoint import load_generator

    model = load_generator(checkpoint)
    return run_folder(
        torch_execute(model, threads), batch=batch, input_dir=input_dir, output_root=output_root,
        backend="pytorch", device="cpu", threads=threads, warmup=warmup, progress=progress,
        tool={"torch": torch.__version__, "checkpoint": str(checkpoint), "precision": "fp32"},
    )
