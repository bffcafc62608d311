import pytest
import torch

from cgan.recipe.model import Discriminator, Generator, fold_batchnorm

# The upstream generator's state_dict keys (znxlwm/pytorch-generative-model-collections CGAN.py).
UPSTREAM_KEYS = [
    "fc.0.weight", "fc.0.bias",
    "fc.1.weight", "fc.1.bias", "fc.1.running_mean", "fc.1.running_var", "fc.1.num_batches_tracked",
    "fc.3.weight", "fc.3.bias",
    "fc.4.weight", "fc.4.bias", "fc.4.running_mean", "fc.4.running_var", "fc.4.num_batches_tracked",
    "deconv.0.weight", "deconv.0.bias",
    "deconv.1.weight", "deconv.1.bias", "deconv.1.running_mean", "deconv.1.running_var",
    "deconv.1.num_batches_tracked",
    "deconv.3.weight", "deconv.3.bias",
]


def test_generator_has_upstream_keys_and_shapes():
    state = Generator(1).state_dict()
    assert list(state) == UPSTREAM_KEYS
    assert state["fc.0.weight"].shape == (1024, 72)
    assert state["fc.3.weight"].shape == (6272, 1024)
    assert state["deconv.0.weight"].shape == (128, 64, 4, 4)
    assert state["deconv.3.weight"].shape == (64, 1, 4, 4)
    assert Generator(3).state_dict()["deconv.3.weight"].shape == (64, 3, 4, 4)


def test_parameter_counts_match_upstream_arithmetic():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(Generator(1)) == 6_650_433
    assert count(Generator(3)) == 6_652_483


def test_generator_output_shape_and_range():
    g = Generator(3).eval()
    with torch.no_grad():
        out = g(torch.rand(100, 72))
    assert out.shape == (100, 3, 28, 28)
    assert out.min() > -1 and out.max() < 1


def test_discriminator_scores_pairs():
    d = Discriminator(1).eval()
    with torch.no_grad():
        score = d(torch.rand(4, 1, 28, 28), torch.rand(4, 10, 28, 28))
    assert score.shape == (4, 1) and bool(((score > 0) & (score < 1)).all())


@pytest.mark.parametrize("channels", [1, 3])
def test_folded_batchnorm_computes_the_same_images(channels):
    torch.manual_seed(0)
    model = Generator(channels)
    with torch.no_grad():  # running statistics that are not the identity
        for bn in (model.fc[1], model.fc[4], model.deconv[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.rand(200, 72)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=2e-5)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(Generator(1).train())


def test_generator_work_per_grid_matches_the_layer_shapes():
    from cgan.recipe.model import generator_gflop_per_grid

    assert generator_gflop_per_grid(1) == pytest.approx(2.6239, abs=1e-4)
    assert generator_gflop_per_grid(3) > generator_gflop_per_grid(1)
