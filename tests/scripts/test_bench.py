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
