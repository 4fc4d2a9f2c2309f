"""Short runs of `python -m verification.drill_db` as part of `make test`: the whole stack on
a primary with a synchronous standby, checkout load through the gateway, the primary SIGKILLed
and the standby promoted; and the only server SIGKILLed and restarted (crash recovery). Each
must keep every acknowledged order, pass all five invariants, see every gRPC service go
NOT_SERVING and come back, and exit 0. The drill starts its own servers, whatever DATABASE_URL
says."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.support.stack import REPO, drills_own_servers

pytestmark = [pytest.mark.stack, drills_own_servers]

SEED = 16
CHECKOUTS = 16


async def run_drill(tmp_path: Path, *mode: str) -> str:
    """The drill's whole output, once it exited 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "verification.drill_db", "--seed", str(SEED),
        "--checkouts", str(CHECKOUTS), "--concurrency", "8", "--kill-at", "0.3",
        "--promote-after", "1.5", "--settle-within", "120", "--data-dir", str(tmp_path / "drill"),
        *mode,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    print(report)
    assert process.returncode == 0, report
    return report


def figure(report: str, label: str) -> str:
    """The value of one row of the figures table."""
    found = re.search(rf"^\s+{re.escape(label)}\s+(.+)$", report, re.MULTILINE)
    assert found is not None, f"no {label!r} in the report"
    return found.group(1).strip()


def assert_kept_and_passed(report: str) -> None:
    assert "result: PASS" in report
    for number in (1, 2, 3, 4, 5):
        assert re.search(rf"\[PASS\] {number}\. ", report), report
    assert "[FAIL]" not in report
    assert "[NOT CHECKED]" not in report
    assert int(figure(report, "acknowledged orders")) > 0
    assert figure(report, "acknowledged before the kill, missing after") == "0"
    assert figure(report, "acknowledged, missing at the end") == "0"
    assert "not seen" not in figure(report, "kill -> first write (time without a writer)")
    for service in ("cart", "inventory", "payment", "checkout"):
        down, up = figure(report, f"health {service}: NOT_SERVING / SERVING again").split(" / ")
        assert "not seen" not in down, report
        assert "not seen" not in up, report


@pytest.mark.timeout(300)
async def test_the_primary_killed_and_its_synchronous_standby_promoted(tmp_path: Path) -> None:
    report = await run_drill(tmp_path)
    assert "primary SIGKILLed, synchronous standby promoted" in report
    assert_kept_and_passed(report)


@pytest.mark.timeout(300)
async def test_the_only_server_killed_and_restarted(tmp_path: Path) -> None:
    report = await run_drill(tmp_path, "--no-standby")
    assert "the only server SIGKILLed and restarted (crash recovery)" in report
    assert_kept_and_passed(report)
