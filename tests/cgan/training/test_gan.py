import math

import numpy as np

from cgan.recipe.model import Generator
from cgan.training.gan import GanConfig, train_gan


def test_a_few_upstream_steps_update_the_generator():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (256, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 256)
    before = Generator(1).state_dict()["fc.0.weight"].clone()  # same init as seed 0 below
    seen = []
    G, history = train_gan(images, labels, GanConfig(epochs=2, batch_size=64, max_steps=3),
                           on_epoch=lambda e, g, h: seen.append(e))
    assert history.steps == 3 and seen == [1]
    assert all(math.isfinite(v) for v in history.d_loss + history.g_loss)
    assert not G.training and G.output_dim == 1
    assert set(G.state_dict()) == set(Generator(1).state_dict())
    assert not np.allclose(G.state_dict()["fc.0.weight"].numpy(), before.numpy())
