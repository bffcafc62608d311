"""The fleet benchmark's pure parts (the runs themselves: `make bench`, section fleet)."""

import json

from scripts.bench_fleet import (
    MEASURED,
    npu_concurrency,
    print_table,
    read_uses,
    real_grids,
    targets,
)


def _line(device, start, end):
    return json.dumps({"tool": "msame", "host": "h", "device": device, "pid": 1, "start": start, "end": end})


def test_concurrency_counts_distinct_devices_at_one_instant_and_each_devices_busy_share():
    lines = [_line(0, 100.0, 104.0), _line(1, 101.0, 103.0), _line(2, 102.0, 106.0),
             _line(0, 104.0, 108.0),  # touches device 0's first use: still one device, not two
             _line(1, 106.0, 107.0), "", _line(3, 50.0, 60.0)]  # before the run: not counted
    uses = read_uses(lines)
    assert len(uses) == 6
    d = npu_concurrency(uses, 100.0, 110.0, npus=3, span=(100.0, 108.0))
    assert d["max_devices_at_once"] == 3 and d["devices_used"] == 3 and d["uses"] == 5
    assert d["all_at_once_s"] == 1.0  # 102..103: devices 0, 1, 2
    assert d["busy_s"] == {"0": 8.0, "1": 3.0, "2": 4.0}
    assert d["busy_share_of_run"] == {"0": 0.8, "1": 0.3, "2": 0.4}
    assert d["busy_share_of_span"] == {"0": 1.0, "1": 0.375, "2": 0.5} and d["span_s"] == 8.0
    one_at_a_time = npu_concurrency(read_uses([_line(0, 0, 1), _line(1, 1, 2)]), 0, 2, npus=2)
    assert one_at_a_time["max_devices_at_once"] == 1 and one_at_a_time["all_at_once_s"] == 0.0


def test_the_real_grids_are_the_plans_parity_and_label_samples():
    from cgan.run.plan import plan_shards

    grids = real_grids(10_000, 8)
    shards = plan_shards(10_000, "ascend", None, None, npu_slots=8)
    assert len(shards) == 8
    assert set(grids) == {g for s in shards for g in (*s.parity, *s.judge)}
    assert 200 <= len(grids) <= 232 and grids[0] == 0 and grids[-1] == 9_999


def _run(grids, objects, manifest_bytes, peaks, most, state="success", latest=True):
    return {"grids": grids, "state": state, "run_id": "manual__x", "wall_s": 10.0, "grids_per_s": grids / 10,
            "real_grids": 232, "published_s": 9.0, "tasks": {"publish": {"instances": 1, "task_seconds": 2.0,
                                                                             "max_s": 2.0}},
            "npu": {"max_devices_at_once": most, "all_at_once_s": 3.0, "uses": 9, "busy_share_of_run": {"0": 0.5}},
            "published": {"objects": objects, "bytes": 10**6, "manifest_bytes": manifest_bytes, "packs": 10,
                          "status": "accepted", "latest": latest, "prefix": "runs/x/", "bucket_objects": 40},
            "peak_rss_mb": dict(zip(MEASURED, peaks, strict=True)), "gallery": {"before_mb": 100, "seconds": 0.1},
            "run_cpu_s_by_component": {"scheduler": 1.0}, "host_cpu_ms_per_grid": 1.0}


def test_targets_compare_the_big_run_with_the_small_one_and_the_table_prints(capsys):
    small = _run(10_000, 60, 20_000, (400.0, 300.0, 150.0), 8)
    big = _run(100_000, 380, 150_000, (430.0, 300.0, 170.0), 8)
    rows = {r["target"].split(" ")[0]: r for r in targets(big, small, 8)}
    assert rows["publishes"]["ok"] and rows["objects"]["ok"] and rows["manifest"]["ok"]
    assert rows["postprocess"]["value"] == 1.075 and rows["postprocess"]["ok"]
    assert rows["publish"]["ok"] and not rows["gallery"]["ok"]  # 170 / 150: over 10% more
    assert rows["all"]["ok"]
    over = targets(_run(100_000, 401, 2_000_000, (1, 1, 1), 7, latest=False), None, 8)
    assert [r["ok"] for r in over] == [False] * len(over)  # 401 > 100 + 300; no small run to compare
    print_table({"npus": 8, "npu_ms_per_grid": 2.548, "topology": "t", "cores": 2,
                 "runs": {"10000": small, "100000": big}, "targets": targets(big, small, 8)})
    out = capsys.readouterr().out
    assert "MISS gallery run page peak memory" in out and "ok   all 8 simulated NPUs in use at once: 8" in out
