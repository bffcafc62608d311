"""cgan.recipe.model_store: exported models by content (checkpoint + export settings + exporter versions)."""

from cgan.recipe.model_store import ModelStore, model_key
from cgan.storage.store import open_store


def test_the_key_follows_the_content_and_the_settings():
    base = model_key("a" * 64, batch=100, opset=11)
    assert base == model_key("a" * 64, batch=100, opset=11)
    others = {model_key("b" * 64, batch=100, opset=11), model_key("a" * 64, batch=200, opset=11),
              model_key("a" * 64, batch=100, opset=13), model_key("a" * 64, batch=100, opset=11, simplify=False)}
    assert len(others | {base}) == 5


def test_an_entry_counts_only_when_whole(tmp_path):
    models = ModelStore(open_store((tmp_path / "root").as_uri()))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx bytes")
    assert models.fetch("k1", tmp_path / "got.onnx") is None  # nothing stored: a miss
    entry = models.put("k1", onnx, {"channels": 1})
    assert entry["onnx_bytes"] == 10 and entry["format"] == "cgan-onnx-v1"
    assert models.fetch("k1", tmp_path / "got.onnx")["channels"] == 1
    assert (tmp_path / "got.onnx").read_bytes() == b"onnx bytes"
    assert models.onnx_uri("k1") == (tmp_path / "root" / "models" / "k1" / "cgan.onnx").as_uri()
    models.store.put_bytes(b"onnx bytez", "models/k1/cgan.onnx")  # same size, other bytes
    assert models.fetch("k1", tmp_path / "got2.onnx") is None and not (tmp_path / "got2.onnx").exists()
    models.store.put_bytes(b"{not json", "models/k1/entry.json")
    assert models.fetch("k1", tmp_path / "got3.onnx") is None
    models.store.put_file(onnx, "models/k2/cgan.onnx")  # crashed before its entry.json
    assert models.fetch("k2", tmp_path / "got4.onnx") is None
