"""How long a started saga waits for an idle saga engine: woken by NOTIFY versus found by its poll.

One `python -m workers.saga_engine` process runs a one-state definition (a Pass) on a fresh
database, first with `SAGA_WAKE_ON_NOTIFY=false` (the baseline: only the poll finds a start),
then with it on; each phase starts executions one by one, spaced so the engine is idle at each
start, and reads from the execution's own history the time from ExecutionStarted to the next
event (its claim). Reports, never asserts. With DATABASE_URL set the database is created on that
server, otherwise on an embedded PostgreSQL, and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import uvloop
from sqlalchemy.ext.asyncio import create_async_engine

from bench.inventory_reservations import BenchSettings, fresh_database, postgres_server
from marketplace_platform.migrations import migrations_dir, upgrade
from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.settings import to_asyncpg_url
from verification.progress import ProgressLine

REPO = Path(__file__).resolve().parents[1]
MACHINE = "saga-wakeup-bench"
DEFINITION = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
READY_WITHIN = 60.0


@dataclass(frozen=True)
class Phase:
    """Start-to-claim times of one phase, in milliseconds."""

    phase: str
    starts: int
    p50_ms: float
    p95_ms: float
    max_ms: float


POLL_BASELINE_SECONDS = "0.25"


def main() -> None:
    """Parse the knobs, run both phases, print them and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=40, help="executions per phase")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between starts")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    phases = uvloop.run(run(BenchSettings(), starts=args.starts, gap=args.gap))
    poll, notify = phases
    for phase in phases:
        print(
            f"  {phase.phase:>6}: {phase.starts} starts, start -> claim p50/p95/max "
            f"{phase.p50_ms}/{phase.p95_ms}/{phase.max_ms} ms"
        )
    ratio = round(notify.p50_ms / poll.p50_ms, 3) if poll.p50_ms else None
    print(f"notify/poll p50 = {ratio}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"phases": [asdict(phase) for phase in phases], "notify_per_poll_p50": ratio}
        args.json.write_text(json.dumps(report, indent=2))


async def run(settings: BenchSettings, *, starts: int, gap: float) -> tuple[Phase, Phase]:
    """The baseline (poll only) and the NOTIFY phase, on one fresh database."""
    async with postgres_server(settings) as (server_url, _), fresh_database(server_url) as url:
        await asyncio.to_thread(upgrade, url, migrations_dir("marketplace_platform.saga"))
        with tempfile.TemporaryDirectory(prefix="saga-wakeup-") as scratch:
            definition = Path(scratch) / "definition.json"
            definition.write_text(json.dumps(DEFINITION))
            poll = await phase("poll", url, definition, wake=False, starts=starts, gap=gap)
            notify = await phase("notify", url, definition, wake=True, starts=starts, gap=gap)
    return poll, notify


async def phase(
    name: str, database_url: str, definition: Path, *, wake: bool, starts: int, gap: float
) -> Phase:
    """Run the engine process with or without its LISTEN; time `starts` spaced starts."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SAGA_DEFINITION": str(definition),
        "SAGA_STATE_MACHINE_NAME": MACHINE,
        "SAGA_WAKE_ON_NOTIFY": "true" if wake else "false",
        # The baseline is the engine as it was before NOTIFY: a 0.25 s poll.
        "SAGA_POLL_INTERVAL_SECONDS": POLL_BASELINE_SECONDS,
        "MIGRATE_ON_START": "false",
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.saga_engine", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    engine = create_async_engine(to_asyncpg_url(database_url))
    try:
        await _wait_for_line(process, "listening on" if wake else "saga engine")
        starter = LocalSagaStarter(engine, state_machine=MACHINE)
        names = []
        line = ProgressLine(f"  {name}: saga starts", starts)
        for _ in range(starts):
            await asyncio.sleep(gap)
            execution = str(uuid.uuid4())
            await starter.start_execution(name=execution, payload={"order_id": execution})
            names.append(execution)
            line.update(len(names))
        await asyncio.sleep(max(gap, 1.0))
        waits = await _start_to_claim_ms(database_url, names)
    finally:
        await engine.dispose()
        process.send_signal(signal.SIGTERM)
        await process.wait()
    if len(waits) < starts:
        raise RuntimeError(f"{name}: only {len(waits)} of {starts} executions were claimed")
    cuts = statistics.quantiles(waits, n=100)
    return Phase(name, starts, round(cuts[49], 1), round(cuts[94], 1), round(max(waits), 1))


async def _wait_for_line(process: asyncio.subprocess.Process, text: str) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(READY_WITHIN):
        async for raw in process.stdout:
            if text in raw.decode(errors="replace"):
                break
        else:
            raise RuntimeError(f"the saga engine exited ({await process.wait()})")
    # Keep draining its output so the process never blocks on a full pipe.
    asyncio.get_running_loop().create_task(_drain(process))


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async for _ in process.stdout:
        pass


async def _start_to_claim_ms(database_url: str, names: list[str]) -> list[float]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT min(h.at) FILTER (WHERE h.seq = 1) AS started,"
            " min(h.at) FILTER (WHERE h.seq = 2) AS claimed"
            " FROM saga.executions AS e JOIN saga.history AS h ON h.execution_id = e.id"
            " WHERE e.name = ANY($1::text[]) GROUP BY e.id",
            names,
        )
    finally:
        await connection.close()
    return sorted(
        (row["claimed"] - row["started"]).total_seconds() * 1000
        for row in rows
        if row["claimed"] is not None
    )


if __name__ == "__main__":
    main()
