"""The benchmark harness's own arithmetic (the benchmark itself runs with `make bench`)."""

import pytest

from scripts.bench import generator_gflop_per_grid, matmul_ceiling


def test_generator_work_per_grid_matches_the_layer_shapes():
    assert generator_gflop_per_grid(1) == pytest.approx(2.6239, abs=1e-4)
    assert generator_gflop_per_grid(3) > generator_gflop_per_grid(1)


def test_ceiling_is_the_best_measured_gemm():
    result = matmul_ceiling(1, n=256)
    assert result["onnxruntime_gflops"] > 0 and result["numpy_gflops"] > 0
    assert result["ceiling_gflops"] == max(result["onnxruntime_gflops"], result["numpy_gflops"])
