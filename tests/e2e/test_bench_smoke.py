"""Short runs of `make bench`'s reservation and saga wake-up benchmarks, so they keep working
(figures are not asserted: speed is measured by `make bench`, never by tests)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def test_the_reservation_benchmark_runs_and_reports_both_phases(
    postgres_server_url: str, tmp_path: Path
) -> None:
    figures = tmp_path / "bench.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.inventory_reservations",
        "--concurrency",
        "4",
        "--seconds",
        "0.5",
        "--warmup",
        "0.1",
        "--rounds",
        "1",
        "--json",
        str(figures),
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": postgres_server_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "hot/spread = " in output.decode()
    report = json.loads(figures.read_text())
    phases = {phase["phase"]: phase for phase in report["phases"]}
    assert set(phases) == {"hot", "spread"}
    for phase in phases.values():
        assert phase["completed"] > 0
        assert (phase["refused"], phase["errors"]) == (0, 0)


async def test_the_saga_wakeup_benchmark_runs_both_phases(
    postgres_server_url: str, tmp_path: Path
) -> None:
    figures = tmp_path / "saga_wakeup.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.saga_wakeup", "--starts", "5", "--gap", "0.05",
        "--json", str(figures),
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": postgres_server_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    report = json.loads(figures.read_text())
    assert [phase["phase"] for phase in report["phases"]] == ["poll", "notify"]
    assert all(phase["starts"] == 5 for phase in report["phases"])
    assert report["notify_per_poll_p50"] is not None
