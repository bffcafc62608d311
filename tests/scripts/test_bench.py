"""The benchmark harness's own arithmetic (the benchmark itself runs with `make bench`)."""

import pytest

from scripts.bench import matmul_ceiling


def test_ceiling_is_the_best_measured_gemm():
    result = matmul_ceiling(1, n=256)
    assert result["onnxruntime_gflops"] > 0 and result["numpy_gflops"] > 0
    assert result["ceiling_gflops"] == max(result["onnxruntime_gflops"], result["numpy_gflops"])


def test_artifact_storage_reads_what_the_cleanup_task_removed_and_what_is_left(tmp_path):
    import json
    import sqlite3

    from scripts.bench import artifact_storage

    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE xcom (dag_run_id INTEGER, task_id TEXT, key TEXT, value TEXT)")
        for run, removed in ((1, 999), (2, 5_000)):
            conn.execute("INSERT INTO xcom VALUES (?, 'cleanup', 'return_value', ?)",
                         (run, json.dumps({"removed_bytes": removed, "left_bytes": 3_000})))
    st = artifact_storage(db, (tmp_path / "root").as_uri(), before=1_000, grids=10)
    # the newest run's workspace, plus what the model store gained during the run
    assert st["bytes_written"] == 5_000 + 2_000 and st["bytes_written_per_grid"] == 700
    assert st["left_bytes"] == 3_000 and st["left_before_run"] == 1_000


def test_int8_ceiling_is_the_best_measured_integer_gemm():
    from scripts.bench_peers import int8_gemm_ceiling

    result = int8_gemm_ceiling(1, n=256, reps=2)
    assert result["const_b_gops"] > 0 and result["fed_b_gops"] > 0
    assert result["ceiling_gops"] == max(result["const_b_gops"], result["fed_b_gops"])


def test_peers_are_timed_in_turn_in_every_round():
    from scripts.bench_peers import interleaved_ms

    calls = []
    runners = {name: (lambda n: lambda x: calls.append(n))(name) for name in ("a", "b", "c")}
    samples = interleaved_ms(runners, None, rounds=2, calls=3, pause_s=0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3 * 2, "b": 3 * 2, "c": 3 * 2}
    assert calls == (["a"] * 4 + ["b"] * 4 + ["c"] * 4) * 2  # warm-up + 3 timed, runner after runner


def test_each_peer_is_judged_on_its_own_outputs(committed_generator):
    """A peer whose digits land in the wrong columns scores low; pixel error is against ORT fp32."""
    import numpy as np
    import torch

    from cgan.recipe.checkpoint import load_generator
    from scripts.bench_peers import judge

    model = load_generator(committed_generator)

    def fp32(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    runners = {"ort-fp32": fp32, "shifted": lambda x: np.roll(fp32(x), 1, axis=0), "noisy": lambda x: fp32(x) + 0.01}
    result = judge(runners, grids=2)
    assert result["ort-fp32"]["label_accuracy"] >= 0.9 and result["ort-fp32"]["max_abs_vs_fp32"] == 0
    assert result["shifted"]["label_accuracy"] < 0.3 and result["shifted"]["digits"] == 200
    assert result["noisy"]["max_abs_vs_fp32"] == pytest.approx(0.01, abs=1e-4)
    assert result["noisy"]["mean_abs_vs_fp32"] == pytest.approx(0.01, abs=1e-4)


def test_the_int8_profile_lists_the_nodes_onnx_runtime_runs(tmp_path, upstream_onnx):
    from cgan.runtimes.ort_int8 import int8_model
    from scripts.bench_peers import node_profile

    rows = node_profile(int8_model(upstream_onnx, cache_dir=tmp_path), calls=3)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert {"QGemm", "QLinearConv"} <= {r["op"] for r in rows} and all(r["ms"] >= 0 for r in rows)


@pytest.mark.slow
def test_the_memory_section_runs_every_task_of_the_cpu_path():
    """`make bench`'s memory section runs each task's code as the DAG runs it today (it broke
    silently when the inference tasks began to write packs)."""
    from scripts.bench import TASK_CODE, task_memory

    measured = task_memory(100)
    assert set(measured) == set(TASK_CODE)
    for task, row in measured.items():
        assert 20 < row["peak_rss_mb"] < 2048, (task, row)
