import onnx
import pytest

from cgan.errors import ExportError
from cgan.recipe.export import DEFAULT_OPSET, export_onnx


def _io(model):
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return [(i.name, dims(i)) for i in model.graph.input], [(o.name, dims(o)) for o in model.graph.output]


def test_upstream_export_has_the_recipe_io(upstream_onnx):
    model = onnx.load(str(upstream_onnx))
    inputs, outputs = _io(model)
    assert inputs == [("image", [100, 72])]
    assert outputs == [("output1", [100, 1, 28, 28])]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {DEFAULT_OPSET}


def test_batchnorm_is_folded_out_of_the_graph(upstream_onnx):
    ops = [n.op_type for n in onnx.load(str(upstream_onnx)).graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Gemm") == 2 and ops.count("ConvTranspose") == 2
    assert ops.count("Relu") == 3 and ops.count("Tanh") == 1


def test_modelzoo_export_is_rgb_and_checked(tmp_path, modelzoo_checkpoint):
    result = export_onnx(modelzoo_checkpoint, tmp_path / "zoo.onnx")
    assert result.channels == 3 and result.simplified
    assert 0 <= result.max_abs_err <= 1e-5
    _, outputs = _io(onnx.load(result.onnx_path))
    assert outputs == [("output1", [100, 3, 28, 28])]
    assert len(result.sha256) == 64


def test_larger_batch_and_other_opset(tmp_path, upstream_checkpoint):
    result = export_onnx(upstream_checkpoint, tmp_path / "b200.onnx", batch=200, opset=17)
    inputs, _ = _io(onnx.load(result.onnx_path))
    assert inputs == [("image", [200, 72])] and result.opset == 17


@pytest.mark.parametrize("batch", [0, 50, 150, 6500])
def test_batch_must_be_whole_grids(tmp_path, upstream_checkpoint, batch):
    with pytest.raises(ExportError, match="multiple of 100"):
        export_onnx(upstream_checkpoint, tmp_path / "x.onnx", batch=batch)
    assert not (tmp_path / "x.onnx").exists()


def test_bad_checkpoint_writes_nothing(tmp_path):
    from cgan.errors import CheckpointError

    with pytest.raises(CheckpointError):
        export_onnx(tmp_path / "missing.pth", tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_parity_failure_removes_the_model(tmp_path, upstream_checkpoint):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(upstream_checkpoint, tmp_path / "x.onnx", tolerance=-1.0)
    assert not (tmp_path / "x.onnx").exists()
