"""The chaos run's figures as JSON and a PNG next to it: checkouts finished over the load's
time with the SIGKILLs marked, and the TIMEOUT cancellation rate per PSP fault phase (what
each kind of PSP trouble cost in sales)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.checkout_plot import pyplot, save


def figures(
    *,
    seed: int,
    samples: Sequence[tuple[float, int]],
    kills: Sequence[tuple[float, str, int]],
    phases: Sequence[tuple[str, int, int]],
) -> dict[str, Any]:
    """The plot's input, JSON-ready: load samples (seconds, checkouts finished), kills (share
    of the load, process), per phase (label, TIMEOUT cancellations, orders placed)."""
    return {
        "seed": seed,
        "load": [[round(t, 3), done] for t, done in samples],
        "kills": [[share, name] for share, name, _pid in kills],
        "phases": [
            {"phase": label, "timed_out": timed, "placed": placed}
            for label, timed, placed in phases
        ],
    }


def write_report(report: Mapping[str, Any], json_path: Path, png_path: Path) -> None:
    """Write the figures' JSON and their PNG."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    write_plot(report, png_path)


def write_plot(report: Mapping[str, Any], path: Path) -> None:
    """Draw the load curve (kills as vertical lines) and the per-phase TIMEOUT rates."""
    plt = pyplot()
    figure, (load, errors) = plt.subplots(1, 2, figsize=(13, 5))
    samples = report["load"]
    times = [t for t, _ in samples]
    load.plot(times, [done for _, done in samples], "-", label="checkouts finished")
    total = samples[-1][1] if samples else 0
    for index, (share, name) in enumerate(report["kills"]):
        moment = next((t for t, done in samples if total and done / total >= share), None)
        if moment is not None:
            load.axvline(moment, color="red", alpha=0.3)
            # Staggered heights: kills at one moment must not print over each other.
            height = total * (index % 4) / 8
            load.annotate(name, (moment, height), rotation=90, fontsize="xx-small", color="red")
    load.set(xlabel="seconds of load", ylabel="checkouts finished (client side)",
             title=f"Load, seed {report['seed']} (red: SIGKILLs)")  # fmt: skip
    load.grid(True, alpha=0.3)
    phases = report["phases"]
    rates = [100 * p["timed_out"] / p["placed"] if p["placed"] else 0.0 for p in phases]
    positions = list(range(len(phases)))
    errors.bar(positions, rates, color="tab:orange")
    errors.set_xticks(positions, [p["phase"][:40] for p in phases], rotation=30, ha="right",
                      fontsize="x-small")  # fmt: skip
    errors.set(ylabel="% of orders cancelled TIMEOUT",
               title="TIMEOUT cancellations per PSP phase in force")  # fmt: skip
    errors.grid(True, axis="y", alpha=0.3)
    save(figure, path)
