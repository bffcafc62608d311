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


def test_a_few_steps_and_onnx_export_agree(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (128, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 128)
    model, seconds = train_classifier(images, labels, ClassifierConfig(epochs=1, max_steps=2))
    assert isinstance(model, DigitClassifier) and seconds > 0 and not model.training
    assert 0.0 <= accuracy(model, images, labels) <= 1.0
    export_classifier_onnx(model, str(tmp_path / "c.onnx"))
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    x = images[:5, None]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.allclose(session.run(None, {"digits": x})[0], ref, atol=1e-4)


def test_random_shift_moves_content_and_keeps_background():
    x = -torch.ones(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape and float(shifted.max()) == 1.0
    assert float(shifted.min()) == -1.0
