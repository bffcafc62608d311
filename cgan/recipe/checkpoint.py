"""Loading generator checkpoints safely and strictly.

A checkpoint is a generator state_dict saved with torch.save: upstream `CGAN_G.pkl` (C = 1),
ModelZoo `CGAN_G.pth` (C = 3, maybe `module.`-prefixed, maybe fp16). It is read with
`torch.load(weights_only=True)`, whose restricted unpickler refuses any object but tensors and
plain containers, so a pickle that would run code is rejected, never executed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from cgan.errors import CheckpointError

CHANNEL_KEY = "deconv.3.weight"
OPTIONAL_SUFFIX = "num_batches_tracked"  # absent in checkpoints saved by torch < 0.4.1
MAX_LISTED = 8
# The generator is ~4 MB (C=3 fp32 ~ 17 MB); a file or its unpacked tensors over this are refused
# before torch.load: a small deflated zip can unpack to gigabytes (an OOM kill spends every retry).
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024


def _check_size(path: Path) -> None:
    """The file, and for torch.save's zip format the sum of its members unpacked, within
    MAX_CHECKPOINT_BYTES; CheckpointError naming the size otherwise."""
    import zipfile

    size = path.stat().st_size
    unpacked = size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError):
            return  # torch.load says what is wrong with it
    if max(size, unpacked) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} is {size:,} bytes, {unpacked:,} unpacked: over {MAX_CHECKPOINT_BYTES:,}, far more than a "
            "CGAN generator (a few MB), so it was not loaded. Pass the generator's state_dict only")


def _listing(items) -> str:
    items = sorted(items)
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _read(path: Path) -> dict:
    import torch

    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} not found: pass the path of a generator state_dict "
            "(e.g. models/cgan_generator.pth)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    _check_size(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors (a pickle that could "
            "run code), so it was not executed. Save the generator with "
            "torch.save(generator.state_dict(), path)"
        ) from exc
    except Exception as exc:  # torch raises many types for garbage (IndexError, RuntimeError, ...)
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or another format: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
            "Pass a file written by torch.save(generator.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state_dict; save the generator with "
            "torch.save(generator.state_dict(), path)"
        )
    return obj


def load_state_dict(path: str | os.PathLike) -> tuple[dict, int]:
    """Read, check and normalise a generator state_dict -> (fp32 state_dict, channels C)."""
    import torch

    from cgan.layout.tensors import SUPPORTED_CHANNELS
    from cgan.recipe.model import expected_generator_shapes

    path = Path(path)
    raw = _read(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_listing(not_tensors)}")
    weight = state.get(CHANNEL_KEY)
    channels = int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None
    if channels not in SUPPORTED_CHANNELS:
        channels_hint = 1
    else:
        channels_hint = channels
    expected = expected_generator_shapes(channels_hint)
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong or channels not in SUPPORTED_CHANNELS:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_listing(wrong)}")
        if channels is not None and channels not in SUPPORTED_CHANNELS:
            parts.append(f"{CHANNEL_KEY} gives C={channels}, supported C are 1 and 3")
        raise CheckpointError(
            f"{path} is not a CGAN generator checkpoint ({'; '.join(parts)}). Expected the "
            "upstream generator's state_dict (fc.0..fc.4, deconv.0..deconv.3)"
        )
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointError(f"{path}: weights that are NaN or infinite in {_listing(not_finite)}: the training "
                              "that saved it diverged; pass an earlier checkpoint")
    fixed = {}
    for key, value in state.items():
        fixed[key] = value.float() if value.is_floating_point() else value
    for key in expected:
        if key not in fixed:  # num_batches_tracked of old checkpoints
            fixed[key] = torch.tensor(0, dtype=torch.long)
    return fixed, channels


def load_generator(path: str | os.PathLike):
    """A Generator with the checkpoint's weights, in eval mode, fp32."""
    from cgan.recipe.model import Generator

    state, channels = load_state_dict(path)
    model = Generator(channels)
    model.load_state_dict(state)
    return model.eval()


def save_generator(model, path: str | os.PathLike) -> Path:
    """torch.save(model.state_dict()) through a temp file, so no half-written checkpoint."""
    import io

    import torch

    from cgan.storage.files import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return atomic_write_bytes(path, buf.getvalue())
