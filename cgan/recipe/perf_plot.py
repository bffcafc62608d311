"""A latency plot for the published perf folder: per-call latency of every shard, and its spread."""

from __future__ import annotations

import io


def latency_plot_png(records: list[dict], title: str = "Inference latency per call") -> bytes:
    import matplotlib.pyplot as plt

    fig = latency_figure(records, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def latency_figure(records: list[dict], title: str = "Inference latency per call"):
    """The plot's matplotlib Figure: calls and call counts on whole-number ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    pooled = []
    for r in records:
        samples = r.get("samples_ms", [])
        pooled.extend(samples)
        left.plot(range(1, len(samples) + 1), samples, lw=0.8, label=f"{r.get('device', '?')} shard")
    left.set_xlabel("call")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))  # no call 1.5
    left.set_ylabel("ms per call")
    left.set_title(title, fontsize=10)
    if len(records) <= 8:
        left.legend(fontsize=7)
    right.hist(pooled, bins=min(50, max(5, len(pooled) // 4)), color="#4a7fb5")
    right.set_xlabel("ms per call")
    right.set_ylabel("calls")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title(f"{len(pooled)} calls, batch {records[0].get('batch')}", fontsize=10)
    fig.tight_layout()
    return fig
