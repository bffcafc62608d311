"""Shared fixtures: small generator checkpoints built on the fly, and their ONNX exports."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED_GENERATOR = REPO / "models" / "cgan_generator.pth"


def build_checkpoint(path: Path, channels: int, *, prefix: str = "", half: bool = False, seed: int = 0) -> Path:
    """A randomly initialised upstream generator saved as a state_dict (BN stats perturbed)."""
    import torch

    from cgan.model import Generator

    torch.manual_seed(seed)
    model = Generator(channels)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so export folding is exercised
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {}
    for key, value in model.state_dict().items():
        if half and value.is_floating_point():
            value = value.half()
        state[prefix + key] = value
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def upstream_checkpoint(tmp_path_factory) -> Path:
    """C = 1, plain keys, fp32: like upstream CGAN_G.pkl."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "CGAN_G.pkl", 1)


@pytest.fixture(scope="session")
def modelzoo_checkpoint(tmp_path_factory) -> Path:
    """C = 3, `module.`-prefixed keys, fp16 tensors: like ModelZoo CGAN_G.pth from DDP + apex O2."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "CGAN_G.pth", 3, prefix="module.", half=True)


@pytest.fixture(scope="session")
def upstream_onnx(tmp_path_factory, upstream_checkpoint) -> Path:
    from cgan.export import export_onnx

    return Path(export_onnx(upstream_checkpoint, tmp_path_factory.mktemp("onnx") / "cgan.onnx").onnx_path)


@pytest.fixture(scope="session")
def committed_generator() -> Path:
    if not COMMITTED_GENERATOR.is_file():
        pytest.fail(f"{COMMITTED_GENERATOR} is missing: it is committed with the repository")
    return COMMITTED_GENERATOR
