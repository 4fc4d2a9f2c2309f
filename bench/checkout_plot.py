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


def write_tracing_plot(result: Mapping[str, Any], path: Path) -> None:
    """Draw bench.checkout_tracing's run: settled/s and CPU ms per checkout of each round, and
    the pooled latency percentiles, tracing off against on."""
    plt = pyplot()
    figure, (throughput, cpu, latency) = plt.subplots(1, 3, figsize=(15, 5))
    colours = {"off": "tab:blue", "on": "tab:orange"}
    ratio = result["plan"]["ratio"]
    cuts = [("closed", "accept_ms", "accept"), ("closed", "confirmed_ms", "CONFIRMED"),
            ("unloaded", "confirmed_ms", "CONFIRMED, unloaded")]  # fmt: skip
    width = 0.4
    for offset, (mode, figures) in enumerate(result["modes"].items()):
        label = "tracing off" if mode == "off" else f"tracing on, ratio {ratio:g}"
        rounds = range(1, len(figures["settled_per_second_by_round"]) + 1)
        throughput.plot(rounds, figures["settled_per_second_by_round"], "o-",
                        color=colours[mode], label=label)  # fmt: skip
        cpu.plot(rounds, figures["cpu_ms_per_checkout_by_round"], "o-", color=colours[mode],
                 label=label)  # fmt: skip
        names, values = [], []
        for kind, key, name in cuts:
            for cut in ("p50", "p99"):
                names.append(f"{name} {cut}")
                values.append(figures[kind][key][cut] or 0.0)
        x = [index + offset * width for index in range(len(values))]
        latency.bar(x, values, width, color=colours[mode], label=label)
        latency.set_xticks([index + width / 2 for index in range(len(names))], names,
                           rotation=30, ha="right", fontsize="small")  # fmt: skip
    concurrency = result["plan"]["concurrency"]
    throughput.set(xlabel="round", ylabel="settled checkouts per second",
                   title=f"Throughput (closed loop, c={concurrency})")  # fmt: skip
    cpu.set(xlabel="round", ylabel="CPU ms per checkout (stack + PostgreSQL)",
            title="CPU per checkout")  # fmt: skip
    latency.set(ylabel="milliseconds (all rounds)", title="Latency percentiles")
    for axes in (throughput, cpu, latency):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="x-small")
    for axes in (throughput, cpu):
        axes.set_ylim(bottom=0)
        axes.set_xticks(list(range(1, result["plan"]["rounds"] + 1)))
    save(figure, path)
