import json

import numpy as np
import pytest

from cgan.recipe.perf import latency_summary, make_record, percentile


def test_percentile_matches_numpy():
    values = list(np.random.default_rng(0).random(37) * 10)
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_record_throughput_from_mean_latency(tmp_path):
    rec = make_record(backend="onnxruntime", device="cpu", batch=200, latencies_ms=[10.0, 20.0, 30.0],
                      grids=6, warmup_calls=1, threads=2, wall_s=1.23456)
    assert rec.latency_ms["mean"] == 20.0 and rec.latency_ms["median"] == 20.0
    assert rec.grids_per_s == pytest.approx(100.0)  # 2 grids per 20 ms call
    assert rec.images_per_s == pytest.approx(10_000.0)
    path = rec.write(tmp_path)
    data = json.loads(path.read_text())
    assert data["backend"] == "onnxruntime" and data["latency_ms"]["p99"] == pytest.approx(29.8)


def test_no_calls_is_an_error():
    with pytest.raises(ValueError, match="no measured calls"):
        latency_summary([])


PEAK_CODE = """
import json, numpy as np
from cgan.recipe.perf import peak_rss_mb
before = peak_rss_mb()
block = np.ones(96 * 1024 * 1024 // 8)  # 96 MiB, every page touched
during = peak_rss_mb()
del block
print(json.dumps([before, during, peak_rss_mb()]))
"""


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="Linux /proc only")
def test_peak_rss_grows_with_touched_memory_and_never_falls():
    import subprocess
    import sys

    from cgan.paths import PROJECT_ROOT

    # a fresh process: this one's peak may already lie above anything the test allocates
    out = subprocess.run([sys.executable, "-c", PEAK_CODE], capture_output=True, text=True, check=True,
                         cwd=PROJECT_ROOT)
    before, during, after = json.loads(out.stdout)
    assert during >= before + 90
    # a peak, not the current size (96 MiB lower once the block is freed); the kernel's RSS
    # counters are approximate per CPU, so the recorded peak may read a little under `during`
    assert after >= during - 4


def test_the_latency_plot_ticks_whole_calls():
    """Three calls: matplotlib's default ticks read 1.0, 1.25, 1.5, ... calls; a call is whole."""
    import matplotlib.pyplot as plt

    from cgan.recipe.perf_plot import latency_figure, latency_plot_png

    records = [{"samples_ms": [2.5, 2.6, 2.55], "device": "npu:0@a", "batch": 100}]
    fig = latency_figure(records)
    left, right = fig.axes
    for ticks in (left.get_xticks(), right.get_yticks()):
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
    assert latency_plot_png(records).startswith(b"\x89PNG")
