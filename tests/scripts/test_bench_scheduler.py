"""The scheduler benchmark's reading of the REST API's answers (the run itself: `make bench`)."""

import pytest

from scripts.bench_scheduler import summarize


def _ti(task, start, end, state="success", map_index=-1):
    return {"task_id": task, "map_index": map_index, "state": state, "start_date": f"2026-11-30T12:00:{start:02d}Z",
            "end_date": f"2026-11-30T12:00:{end:02d}Z", "duration": None if state == "skipped" else end - start}


def test_summary_sums_mapped_tasks_skips_skipped_ones_and_splits_cpu_per_grid():
    result = {
        "run": {"start_date": "2026-11-30T12:00:00Z", "end_date": "2026-11-30T12:00:50Z", "conf": {}},
        "task_instances": [_ti("plan", 0, 1), _ti("msame_infer", 3, 3, state="skipped"),
                           _ti("onnxruntime_infer", 2, 22, map_index=0), _ti("onnxruntime_infer", 3, 33, map_index=1),
                           _ti("publish", 40, 48)],
        "inference": [{"cpu_s": {"inference": 10.0, "render": 1.0, "judge": 0.5, "pack": 0.25, "upload": 0.5},
                       "peak_rss_mb": 410.5},  # the renderer's parts and the packer's (cgan.run.staging)
                      {"cpu_s": {"inference": 12.0, "render": 1.0, "judge": 0.5, "pack": 0.25, "upload": 0.5},
                       "peak_rss_mb": 402.0}],
        "observed_s": 52.0,
    }
    d = summarize(result, {"grids": 1000, "seconds": 25.0, "grids_per_s": 40.0}, stack_cpu_s=40.0)
    assert d["wall_s"] == 50 and d["ratio"] == 2.0 and d["grids_per_s"] == 20.0
    assert "msame_infer" not in d["tasks"]
    assert d["inference_task_peak_rss_mb"] == {"min": 402.0, "max": 410.5}
    infer = d["tasks"]["onnxruntime_infer"]
    assert infer == {"instances": 2, "task_seconds": 50.0, "max_s": 30.0, "queued_s": 0.0, "span_s": 31.0}
    assert d["cpu_ms_per_grid"] == pytest.approx({"inference": 22.0, "render": 2.0, "judge": 1.0, "pack": 0.5,
                                                  "upload": 1.0, "overhead": 13.5})


def test_overhead_is_the_runs_cpu_by_component_and_the_timeline_and_publish_time_are_read_back():
    tis = [_ti("plan", 0, 1), _ti("onnxruntime_infer", 2, 22, map_index=0), _ti("publish", 40, 48),
           _ti("cleanup", 48, 50)]
    for ti in tis:
        ti["queued_when"] = ti["start_date"]
    tis[2]["queued_when"] = "2026-11-30T12:00:35Z"  # publish waited 5 s for a slot
    result = {
        "run": {"start_date": "2026-11-30T12:00:00Z", "end_date": "2026-11-30T12:00:50Z", "conf": {}},
        "task_instances": tis,
        "inference": [{"cpu_s": {"inference": 10.0, "render": 1.0, "judge": 0.5, "upload": 0.5,
                                 "task_process": 14.0}}],
        "observed_s": 52.0,
        "component_cpu_s": {"scheduler": 3.0, "tasks (executor, supervisors, task processes)": 20.0,
                            "s3 server": 2.0},
    }
    d = summarize(result, {"grids": 1000, "seconds": 25.0, "grids_per_s": 40.0}, stack_cpu_s=400.0)
    # 25 s of the run's CPU, 12 of it in the inference parts: the stack's start-up is not overhead
    assert d["run_cpu_s"] == 25.0 and d["cpu_ms_per_grid"]["overhead"] == pytest.approx(13.0)
    assert d["inference_tasks_cpu_s_outside_parts"] == 2.0
    assert d["published_s"] == 48.0
    assert d["tasks"]["publish"]["queued_s"] == 5.0 and d["tasks"]["plan"]["queued_s"] == 0.0
    assert [(r["task"], r["queued_when"], r["end_date"]) for r in d["timeline"]] == [
        ("plan", 0.0, 1.0), ("onnxruntime_infer[0]", 2.0, 22.0), ("publish", 35.0, 48.0), ("cleanup", 48.0, 50.0)]


class _FakeApi:
    """The REST answers of one triggered run: queued, running, then `final` state."""

    def __init__(self, final: str, tis: list[dict], xcoms: dict[int, object]):
        self.states = ["queued", "running", final]
        self.tis, self.xcoms, self.calls = tis, xcoms, []

    def __call__(self, method, path, **kwargs):
        self.calls.append((method, path, kwargs))
        if method == "POST":
            assert kwargs["json"]["conf"] == {"num_grids": 4}
            return {"dag_run_id": "manual__1", "state": "queued"}
        if path.endswith("/taskInstances"):
            return {"task_instances": self.tis}
        if "/xcomEntries/" in path:
            return {"value": self.xcoms[kwargs["params"]["map_index"]]}
        return {"dag_run_id": "manual__1", "state": self.states.pop(0)}


def test_run_once_waits_for_the_run_and_reads_every_inference_tasks_xcom(monkeypatch):
    import os

    from scripts import bench_scheduler

    monkeypatch.setattr(bench_scheduler, "POLL_S", 0)
    tis = [_ti("plan", 0, 1), _ti("onnxruntime_infer", 2, 9, map_index=0), _ti("onnxruntime_infer", 2, 8, map_index=1)]
    # XCom values come back as JSON text or as objects, depending on the serializer
    api = _FakeApi("success", tis, {0: '{"cpu_s": {"inference": 1.0}}', 1: {"cpu_s": {"inference": 2.0}}})
    out = bench_scheduler.run_once(api, {"bench": os.getpid()}, {"num_grids": 4})
    assert out["run"]["state"] == "success" and out["task_instances"] == tis
    assert sorted(x["cpu_s"]["inference"] for x in out["inference"]) == [1.0, 2.0]
    assert [c[0] for c in api.calls].count("GET") == 3 + 1 + 2  # 3 polls, the task instances, 2 XComs
    assert out["component_cpu_s"]["bench"] >= 0


def test_run_once_names_each_task_state_of_a_failed_run(monkeypatch):
    from scripts import bench_scheduler

    monkeypatch.setattr(bench_scheduler, "POLL_S", 0)
    tis = [_ti("plan", 0, 1), _ti("onnxruntime_infer", 2, 9, state="failed", map_index=3)]
    with pytest.raises(RuntimeError, match=r"ended failed: plan\[-1\]=success, onnxruntime_infer\[3\]=failed"):
        bench_scheduler.run_once(_FakeApi("failed", tis, {}), {}, {"num_grids": 4})


def test_component_cpu_reports_a_components_children_apart_only_where_asked():
    import os
    import subprocess
    import sys

    from scripts.bench_scheduler import component_cpu_s

    me = {"bench": os.getpid()}
    before = component_cpu_s(me, {"bench": "children"})
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.3: pass"], check=True)  # reaped: our children's CPU
    split = component_cpu_s(me, {"bench": "children"})
    whole = component_cpu_s(me)
    assert split["children"] - before["children"] >= 0.25
    assert split["bench"] - before["bench"] < 0.25  # the child's CPU is not the component's own
    assert set(whole) == {"bench"} and whole["bench"] >= split["bench"] + split["children"] - 0.05
