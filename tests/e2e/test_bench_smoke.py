"""A short run of `make bench`'s reservation benchmark, so it keeps working (figures are not
asserted: speed is measured by `make bench`, never by tests)."""

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
