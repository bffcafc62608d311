import numpy as np
import onnxruntime as ort
import torch

from cgan.training.classifier import (
    ClassifierConfig,
    DigitClassifier,
    accuracy,
    export_classifier_onnx,
    random_shift,
    train_classifier,
)


def blocks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A task a few steps can learn: the label decides where a bright block sits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = np.full((n, 28, 28), -1.0, np.float32)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 5)
        images[i, 4 + 12 * r: 10 + 12 * r, 1 + 5 * c: 5 + 5 * c] = 1.0
    return images, labels


def test_a_few_steps_learn_and_onnx_export_agrees(tmp_path):
    images, labels = blocks(128, 0)
    model, seconds = train_classifier(images, labels, ClassifierConfig(epochs=3, max_steps=5, batch_size=32, lr=3e-3))
    assert isinstance(model, DigitClassifier) and seconds > 0 and not model.training
    test_images, test_labels = blocks(200, 1)
    untrained = accuracy(DigitClassifier().eval(), test_images, test_labels)
    trained = accuracy(model, test_images, test_labels)
    assert trained > 0.4 and trained > untrained + 0.2, (trained, untrained)  # chance is 0.1
    export_classifier_onnx(model, str(tmp_path / "c.onnx"))
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    x = images[:5, None]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.allclose(session.run(None, {"digits": x})[0], ref, atol=1e-4)


def test_accuracy_is_the_share_of_argmax_hits():
    images, _ = blocks(40, 2)
    model = DigitClassifier().eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(images).unsqueeze(1)).argmax(1).numpy()
    assert accuracy(model, images, predicted) == 1.0
    assert accuracy(model, images, (predicted + 1) % 10) == 0.0
    half = np.where(np.arange(40) < 10, predicted, (predicted + 1) % 10)
    assert accuracy(model, images, half) == 0.25


def test_random_shift_moves_content_and_keeps_background():
    x = -torch.ones(32, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape
    positions = []
    for image in shifted[:, 0]:
        bright = (image == 1.0).nonzero().tolist()
        assert len(bright) == 1 and int((image == -1.0).sum()) == 28 * 28 - 1  # moved, not smeared
        positions.append(tuple(bright[0]))
    offsets = {(r - 14, c - 14) for r, c in positions}
    assert all(abs(dr) <= 2 and abs(dc) <= 2 for dr, dc in offsets)
    assert len(offsets) >= 5, offsets  # the shift varies per image and really moves content
    again = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(again, shifted)  # seeded
    assert torch.equal(random_shift(x, 0, torch.Generator().manual_seed(1)), x)
