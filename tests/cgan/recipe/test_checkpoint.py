import builtins
import pickle

import pytest
import torch

from cgan.errors import CheckpointError
from cgan.recipe.checkpoint import load_generator, load_state_dict, save_generator
from cgan.recipe.model import Discriminator, Generator
from tests.conftest import build_checkpoint


def test_upstream_checkpoint_loads_with_c1(upstream_checkpoint):
    state, channels = load_state_dict(upstream_checkpoint)
    assert channels == 1
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


def test_modelzoo_checkpoint_prefix_and_fp16(modelzoo_checkpoint):
    raw = torch.load(modelzoo_checkpoint, weights_only=True)
    assert next(iter(raw)).startswith("module.") and raw["module.fc.0.weight"].dtype == torch.float16
    model = load_generator(modelzoo_checkpoint)
    assert model.output_dim == 3 and not model.training
    assert model.fc[0].weight.dtype == torch.float32
    assert torch.equal(model.fc[0].weight, raw["module.fc.0.weight"].float())


def test_checkpoint_without_num_batches_tracked_loads(tmp_path):
    state = {k: v for k, v in Generator(1).state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pkl")
    assert load_generator(tmp_path / "old.pkl").output_dim == 1


def test_wrapped_state_dict_loads(tmp_path):
    torch.save({"state_dict": Generator(1).state_dict()}, tmp_path / "wrapped.pth")
    assert load_generator(tmp_path / "wrapped.pth").output_dim == 1


def test_save_roundtrip(tmp_path):
    g = Generator(1).eval()
    path = save_generator(g, tmp_path / "sub" / "g.pth")
    assert torch.equal(load_generator(path).fc[0].weight, g.fc[0].weight)
    assert not list(path.parent.glob(".*part"))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is a text file, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(path)


def test_truncated_checkpoint(tmp_path, upstream_checkpoint):
    data = upstream_checkpoint.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or another format"):
        load_state_dict(path)


def test_another_models_checkpoint_names_keys(tmp_path):
    torch.save(Discriminator(1).state_dict(), tmp_path / "CGAN_D.pkl")
    with pytest.raises(CheckpointError) as err:
        load_state_dict(tmp_path / "CGAN_D.pkl")
    msg = str(err.value)
    assert "not a CGAN generator checkpoint" in msg
    assert "missing keys: deconv.0.bias" in msg and "unexpected keys: conv.0.bias" in msg


def test_wrong_shapes_are_named(tmp_path):
    state = Generator(1).state_dict()
    state["fc.0.weight"] = torch.zeros(1024, 110)  # a 100-dim noise generator, say
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: fc\.0\.weight \(1024, 110\) \(expected \(1024, 72\)\)"):
        load_state_dict(tmp_path / "wide.pth")


def test_unsupported_channel_count(tmp_path):
    state = Generator(1).state_dict()
    state["deconv.3.weight"] = torch.zeros(64, 2, 4, 4)
    state["deconv.3.bias"] = torch.zeros(2)
    torch.save(state, tmp_path / "c2.pth")
    with pytest.raises(CheckpointError, match="C=2, supported C are 1 and 3"):
        load_state_dict(tmp_path / "c2.pth")


# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (set on a worker for some other job) switches torch.load to
# full unpickling wherever weights_only is not passed: the loader must pass it, not rely on torch's
# default.
UNSAFE_DEFAULT = pytest.mark.parametrize("torch_default", ["safe", "forced unsafe"])


def _set_default(monkeypatch, torch_default):
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    if torch_default == "forced unsafe":
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    else:
        monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)


@UNSAFE_DEFAULT
def test_whole_pickled_module_is_refused(tmp_path, monkeypatch, torch_default):
    _set_default(monkeypatch, torch_default)
    torch.save(Generator(1), tmp_path / "module.pth")  # a pickled nn.Module, not a state_dict
    with pytest.raises(CheckpointError, match="refused to load"):
        load_state_dict(tmp_path / "module.pth")


class _Exploit:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@UNSAFE_DEFAULT
@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_code_executing_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, writer, torch_default):
    _set_default(monkeypatch, torch_default)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"fc.0.weight": _Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not executed|not a readable"):
        load_state_dict(path)
    assert not marker.exists(), "the pickle's code ran while loading"


def test_fixture_builder_is_a_real_generator(tmp_path):
    path = build_checkpoint(tmp_path / "x.pth", 1, seed=3)
    assert load_generator(path).output_dim == 1


def test_a_checkpoint_that_unpacks_to_gigabytes_is_refused_before_loading(tmp_path, monkeypatch):
    """A small deflated zip (torch.save's format) whose members unpack past the cap: refused from
    the zip's directory, torch.load never called (before: 1.3 GB of memory for a 25 MB file)."""
    import zipfile

    from cgan.recipe import checkpoint

    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(checkpoint.MAX_CHECKPOINT_BYTES + 1))
    assert bomb.stat().st_size < 2 * 1024 * 1024
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(CheckpointError, match="unpacked: over 268,435,456"):
        load_state_dict(bomb)


def test_nan_weights_are_named(tmp_path):
    model = Generator()
    state = model.state_dict()
    state["fc.0.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite in fc\.0\.weight"):
        load_state_dict(path)
