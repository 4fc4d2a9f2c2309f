"""A short zone drill as part of `make test`: `python -m verification.drill_zone` starts the
whole stack in two zones, checks out through the gateway, SIGKILLs every process of zone-b at
once and has the supervisor keep them down, releases the zone (which comes back while the
orders settle: no load after the loss, to keep the run short), then checks every invariant; it
must exit 0, with the surviving zone having taken and confirmed orders during the loss."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.support.stack import REPO

pytestmark = pytest.mark.stack

SEED = 11
PHASE_ROW = r"^{phase}\s+[\d.]+\s+(?P<orders>\d+)\s+[\d.]+\s+(?P<confirmed>\d+)\s"


@pytest.mark.timeout(300)
async def test_a_short_zone_drill_keeps_every_invariant_and_the_other_zone_serves(
    postgres_server_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = postgres_server_url  # the drill creates and drops its own database
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "verification.drill_zone", "--seed", str(SEED), "--zone", "zone-b",
        "--before-seconds", "3", "--down-seconds", "6", "--after-seconds", "0",
        "--concurrency", "4", "--settle-within", "60", "--data-dir", str(tmp_path / "drill"),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    print(report)

    assert process.returncode == 0, report
    assert "result: PASS: invariants PASS: zero invariant violations; zone-b kept down" in report
    for number in (1, 2, 3, 4, 5):
        assert re.search(rf"\[PASS\] {number}\. ", report), report
    assert "[FAIL]" not in report
    assert "[NOT CHECKED]" not in report
    killed = re.search(r"zone-b lost: (\d+) processes SIGKILLed at once", report)
    assert killed is not None
    assert int(killed.group(1)) == 13  # every service, worker and gateway of the zone
    assert "kept down by the supervisor for 6s: yes" in report
    during = re.search(PHASE_ROW.format(phase="zone down"), report, re.MULTILINE)
    assert during is not None, report
    assert int(during["orders"]) > 0  # the surviving zone took orders while zone-b was gone
    assert int(during["confirmed"]) > 0  # ... and its sagas confirmed them
    assert re.search(r"back [\d.]+s after its release", report), report
