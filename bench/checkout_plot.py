"""The checkout benchmark's PNG: throughput and latency against concurrency, per stored-orders
level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: files only, no display (shared by the chaos
    plot, verification.chaos_plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path) -> None:
    """Write `figure` as a PNG at `path` (its folder created) and free it."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


def write_plot(steps: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Draw accepted and confirmed checkouts/s and p50/p99 latencies for the closed-loop steps."""
    plt = pyplot()
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(13, 5))
    levels = sorted({step["stored_orders"] for step in steps})
    colours = plt.get_cmap("tab10")
    for index, stored in enumerate(levels):
        ramp = [s for s in steps if s["stored_orders"] == stored and s["mode"] == "closed"]
        x = [s["concurrency"] for s in ramp]
        colour = colours(index)
        label = f"{stored:,} stored"
        throughput.plot(x, [s["confirmed_per_second"] for s in ramp], "o-", color=colour,
                        label=f"confirmed/s, {label}")  # fmt: skip
        throughput.plot(x, [s["accepted_per_second"] for s in ramp], "x--", color=colour,
                        label=f"accepted/s, {label}")  # fmt: skip
        for key, style in (("accept_ms", "--"), ("confirmed_ms", "-")):
            latency.plot(x, [s[key]["p99"] for s in ramp], style, marker="o", color=colour,
                         label=f"{key.removesuffix('_ms')} p99, {label}")  # fmt: skip
            latency.plot(x, [s[key]["p50"] for s in ramp], style, marker=".", color=colour,
                         alpha=0.4, label=f"{key.removesuffix('_ms')} p50, {label}")  # fmt: skip
    throughput.set(xlabel="concurrent clients", ylabel="checkouts per second",
                   title="Throughput (closed loop)")  # fmt: skip
    latency.set(xlabel="concurrent clients", ylabel="milliseconds", yscale="log",
                title="Accept latency and time to CONFIRMED")  # fmt: skip
    for axes in (throughput, latency):
        axes.set_xscale("log", base=2)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="x-small")
    save(figure, path)
