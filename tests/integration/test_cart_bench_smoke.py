"""A short run of `make bench`'s cart-read benchmark, so it keeps working (figures are not
asserted: speed is measured by `make bench`, never by tests)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def test_the_cart_read_benchmark_runs_and_reports_both_figures(
    postgres_server_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    figures = tmp_path / "cart_reads.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.cart_reads",
        "--concurrency", "4",
        "--seconds", "0.5",
        "--warmup", "0.1",
        "--rounds", "1",
        "--carts", "10",
        "--json", str(figures),
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": postgres_server_url, "REDIS_URL": redis_server_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 0, text
    assert "cached/uncached = " in text
    report = json.loads(figures.read_text())
    assert report["cached_per_second"] > 0
    assert report["uncached_per_second"] > 0
    phases = {phase["phase"]: phase for phase in report["phases"]}
    assert set(phases) == {"cached", "uncached"}
    for phase in phases.values():
        assert phase["completed"] > 0
        assert (phase["refused"], phase["errors"]) == (0, 0)
