"""scripts/bench_npu.py: simulated NPUs through the ascend inference task's code (a small run)."""

from scripts import bench_npu


def test_the_npu_section_measures_each_tool_and_prints_the_targets(capsys):
    result = bench_npu.bench_npu(npus=1, grids=120, modes=("ais_bench", "batched"))
    for mode in ("ais_bench", "batched"):
        (row,) = result[mode]
        assert row["grids"] == 120 and 0 < row["busy"] <= 1 and 0 < row["tool_busy"] <= 1
        assert row["npu_s"] == round(120 * bench_npu.NPU_MS_PER_GRID / 1000, 2)
        assert set(row["host_cpu_ms_per_grid"]) == {"render", "judge", "pack", "upload"}
    process = result["ais_bench"][0]["npu_process"]  # from the run's perf.json notes
    assert process["opened_s"] > 0 and process["waited_s"] >= 0
    assert result["batched"][0]["npu_process"] is None
    bench_npu.print_table(result)
    out = capsys.readouterr().out
    assert "ais_bench NPU busy share of its task's wall time: npu 0 " in out
    assert "the NPU's process: session open after" in out and "msame running:" in out
