"""A short chaos run as part of `make test`: `python -m verification.chaos` with a fixed seed
starts the whole stack, drives retry storms and customer cancels while it SIGKILLs processes,
restarts Redis, injects PSP faults (two outages past the run's deadlines) and a poison message,
then checks every invariant; it must print its seed, check all five, and exit 0."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.support.stack import REPO

pytestmark = pytest.mark.stack

SEED = 7
CHECKOUTS = 40
KILLS = 3
OUTAGE_SECONDS = 25  # past the run's authorization budget (20 s, verification.stack)


@pytest.mark.timeout(600)
async def test_a_short_chaos_run_keeps_every_invariant(
    postgres_server_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = postgres_server_url  # the run creates and drops its own database
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "verification.chaos", "--seed", str(SEED),
        "--checkouts", str(CHECKOUTS), "--kills", str(KILLS), "--concurrency", "16",
        "--outage-seconds", str(OUTAGE_SECONDS), "--settle-within", "180",
        "--data-dir", str(tmp_path / "chaos"),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    print(report)

    assert process.returncode == 0, report
    assert f"chaos seed {SEED}; replay with:" in report
    assert "result: PASS: zero invariant violations" in report
    kills = re.search(r"faults: (\d+) SIGKILLs", report)
    assert kills is not None
    assert int(kills.group(1)) == KILLS
    for number in (1, 2, 3, 4, 5):
        assert re.search(rf"\[PASS\] {number}\. ", report), report
    assert "[FAIL]" not in report
    assert "[NOT CHECKED]" not in report
    assert "poison message" in report  # the one DLQ message the run may leave
    # A pass means something only if the run exercised what it checks: parcels and captures.
    assert re.search(r"^\s+[1-9]\d*\s+SHIPPED$", report, re.MULTILINE), report
