"""scripts/bench_gpu.py: the harness on the CPU (`--device cpu`), its refusals without a GPU.

The GPU figures themselves come from running it on a machine with an NVIDIA GPU; no test
depends on one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench_gpu import SEED_FIGURES, main, parse_args

REPO = Path(__file__).resolve().parents[2]


def test_cpu_run_measures_each_precision_against_fp32(tmp_path, capsys):
    assert main(["--device", "cpu", "--batches", "100,200", "--precisions", "fp32,bf16",
                 "--min-seconds", "0.05", "--check-grids", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    runs = {(r["precision"], r["batch"]): r for r in results["runs"]}
    assert set(runs) == {("fp32", 100), ("fp32", 200), ("bf16", 100), ("bf16", 200)}
    for (_, batch), r in runs.items():
        assert r["mode"] == "eager" and r["calls"] >= 5
        assert r["ms_per_grid"] == pytest.approx(r["ms_per_call"] / (batch // 100))
        assert r["grids_per_s"] == pytest.approx(1000 / r["ms_per_grid"])
    fp32, bf16 = results["accuracy"]["fp32"], results["accuracy"]["bf16"]
    assert fp32["max_abs_err_vs_fp32"] == 0.0 and fp32["pixels_changed_vs_fp32"] == 0.0
    assert bf16["max_abs_err_vs_fp32"] > 1e-3  # the precision really changed
    assert fp32["label_accuracy"] >= 0.9 and bf16["label_accuracy"] >= 0.9
    printed = capsys.readouterr().out
    assert "2,337 grids/s" in printed and "Ascend 310" in printed  # the seed's figures, labelled
    assert results["seed_figures"] == SEED_FIGURES


def test_without_a_gpu_it_says_so_and_names_the_cpu_benchmark(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode == 0:
        pytest.skip("this machine has a CUDA GPU")
    assert "no CUDA GPU" in proc.stderr and "make bench" in proc.stderr
    assert not (tmp_path / "gpu_results.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--batches", "150"], "multiples of 100"),
    (["--batches", "1e3"], "integers"),
    (["--precisions", "fp8"], "unknown ['fp8']"),
    (["--device", "tpu"], "cuda or cpu"),
])
def test_bad_options_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
