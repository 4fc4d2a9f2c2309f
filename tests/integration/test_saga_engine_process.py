"""The saga engine as a real process: SIGKILL it mid-task or mid-Wait, start another, and the
execution resumes from its last completed state; SIGTERM stops it cleanly; the history CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.saga.local import HistoryEvent, LocalSagaStarter
from tests.support.polling import eventually
from tests.support.processes import PythonProcesses

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "tests/support/asl/hold_and_gate.asl.json"
WITHIN = 60.0
LEASE_SECONDS = 1.5


@pytest.fixture
def starter(engine: AsyncEngine, machine_name: str) -> LocalSagaStarter:
    return LocalSagaStarter(engine, state_machine=machine_name)


class Runners(PythonProcesses):
    """Saga engine processes started by a test, all stopped at its end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__("workers.saga_engine", env, log_dir, "runner-{}.out")

    def calls(self) -> Counter[str]:
        path = self.log_dir / "calls.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return Counter(json.loads(line)["step"] for line in lines)


@pytest.fixture
def runners(migrated_database_url: str, machine_name: str, tmp_path: Path) -> Iterator[Runners]:
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "SAGA_DEFINITION": str(DEFINITION),
        "SAGA_HANDLERS": "tests.support.asl.handlers:HANDLERS",
        "SAGA_STATE_MACHINE_NAME": machine_name,
        "SAGA_LEASE_SECONDS": str(LEASE_SECONDS),
        "SAGA_POLL_INTERVAL_SECONDS": "0.05",
        "SAGA_TEST_LOG_DIR": str(tmp_path),
        "MIGRATE_ON_START": "false",
    }
    started = Runners(env, tmp_path)
    yield started
    started.stop_all()


async def wait_until(what: str, condition: Callable[[], Any]) -> None:
    await eventually(condition, what=what, within=WITHIN, interval=0.05)


def of_type(history: list[HistoryEvent], kind: str, state: str | None = None) -> list[HistoryEvent]:
    return [e for e in history if e.type == kind and (state is None or e.state == state)]


async def test_a_killed_runner_mid_task_is_resumed_from_the_last_completed_state(
    starter: LocalSagaStarter, runners: Runners, tmp_path: Path
) -> None:
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={"order_id": name, "hold_seconds": 0})
    first = runners.start()
    await wait_until("the gate task to start", lambda: runners.calls()["gate"] == 1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    description = await starter.describe(name)
    assert description is not None
    assert (description.status, description.current_state) == ("RUNNING", "Gate")

    runners.start()
    await wait_until("the gate to be retried", lambda: runners.calls()["gate"] == 2)
    (tmp_path / f"open-{name}").touch()

    async def finished() -> bool:
        described = await starter.describe(name)
        return described is not None and described.status != "RUNNING"

    await wait_until("the execution to end", finished)
    description = await starter.describe(name)
    assert description is not None
    assert description.status == "SUCCEEDED"
    assert description.output["confirm"] == {"done": "confirm"}

    # Reserve completed before the kill and was not run again; the Gate task, in flight when
    # the runner died, ran again (at-least-once); Confirm ran once.
    assert runners.calls() == Counter({"reserve": 1, "gate": 2, "confirm": 1})
    history = await starter.history(name)
    assert len(of_type(history, "TaskSucceeded", "Reserve")) == 1
    gate_runs = of_type(history, "TaskScheduled", "Gate")
    assert len(gate_runs) == 2
    assert gate_runs[0].owner != gate_runs[1].owner
    resumed = of_type(history, "ExecutionResumed")
    assert len(resumed) == 1
    assert resumed[0].payload == {"expired_lease_of": gate_runs[0].owner}
    assert resumed[0].seq > gate_runs[0].seq
    assert [e.type for e in history].count("ExecutionSucceeded") == 1

    # The history CLI shows the same story.
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.saga_engine",
        "history",
        name,
        cwd=ROOT,
        env=runners.env,
        stdout=asyncio.subprocess.PIPE,
    )
    # Generous: a cold interpreter start on a busy machine can take tens of seconds.
    stdout, _ = await asyncio.wait_for(cli.communicate(), 120)
    shown = stdout.decode()
    assert cli.returncode == 0
    assert "ExecutionResumed" in shown
    assert shown.count("TaskScheduled") == 4  # Reserve, Gate twice, Confirm
    assert "ExecutionSucceeded" in shown.splitlines()[-1]


async def test_a_wait_survives_a_killed_runner_and_ends_on_time(
    starter: LocalSagaStarter, runners: Runners, tmp_path: Path
) -> None:
    name = str(uuid.uuid4())
    (tmp_path / f"open-{name}").touch()
    await starter.start_execution(name=name, payload={"order_id": name, "hold_seconds": 3})
    first = runners.start()

    async def waiting() -> bool:
        return bool(of_type(await starter.history(name), "WaitScheduled"))

    await wait_until("the Wait to be scheduled", waiting)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = runners.start()

    async def finished() -> bool:
        described = await starter.describe(name)
        return described is not None and described.status != "RUNNING"

    await wait_until("the execution to end", finished)
    history = await starter.history(name)
    (scheduled,) = of_type(history, "WaitScheduled", "Hold")
    until = datetime.fromisoformat(scheduled.payload["until"].replace("Z", "+00:00"))
    (gate,) = of_type(history, "TaskScheduled", "Gate")
    assert gate.at >= until, "the Wait ended early"
    assert len(of_type(history, "WaitStateEntered", "Hold")) == 1
    assert runners.calls() == Counter({"reserve": 1, "gate": 1, "confirm": 1})

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    output = (tmp_path / "runner-1.out").read_text()
    assert "stopped" in output
