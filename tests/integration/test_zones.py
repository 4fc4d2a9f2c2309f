"""Zones in the supervisor core, with real processes: a zone held down has the processes that
end left down until it is released; the other zone's are restarted as always."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from local_supervisor.console import PrefixedConsole
from local_supervisor.processes import ProcessSpec, RestartPolicy, Supervisor
from local_supervisor.state_file import read_state
from local_supervisor.zones import held_zones, held_zones_path, hold_zone, release_zone
from tests.support.polling import eventually

WITHIN = 15.0
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
QUICK = RestartPolicy(first_delay=0.1, max_delay=0.1)


@pytest.fixture
async def zoned(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, io.StringIO, Path]]:
    """A supervisor keeping one process in each of zone-a and zone-b (and one of no zone)."""
    output = io.StringIO()
    state_file = tmp_path / "run" / "supervisor.json"
    holds = held_zones_path(tmp_path)
    hold_zone(holds, "zone-a")  # a hold left from an earlier run is forgotten at start
    supervisor = Supervisor(
        console=PrefixedConsole(output),
        base_env=os.environ,
        state_file=state_file,
        stop_grace=2.0,
        restart_policy=QUICK,
        held_zones_file=holds,
    )
    assert held_zones(holds) == frozenset()
    supervisor.launch(
        [
            ProcessSpec(name="worker@zone-a", argv=SLEEPER, zone="zone-a"),
            ProcessSpec(name="worker@zone-b", argv=SLEEPER, zone="zone-b"),
            ProcessSpec(name="psp", argv=SLEEPER),
        ]
    )
    try:
        answers = await supervisor.wait_until_ready(within=WITHIN)
        assert all(answer.ready for answer in answers.values())
        yield supervisor, output, holds
    finally:
        await supervisor.stop()
    assert not holds.exists()  # the holds end with the run


def pids(state_file: Path) -> dict[str, int | None]:
    return {state.name: state.pid for state in read_state(state_file)}


async def test_a_held_zones_processes_stay_down_until_it_is_released(
    zoned: tuple[Supervisor, io.StringIO, Path], tmp_path: Path
) -> None:
    supervisor, output, holds = zoned
    state_file = tmp_path / "run" / "supervisor.json"
    before = pids(state_file)
    assert {state.zone for state in read_state(state_file)} == {"zone-a", "zone-b", None}

    hold_zone(holds, "zone-a")
    for name in ("worker@zone-a", "worker@zone-b", "psp"):
        pid = before[name]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    def restarted(name: str) -> bool:
        return pids(state_file).get(name) not in (None, before[name])

    await eventually(lambda: restarted("worker@zone-b") and restarted("psp"), within=WITHIN)
    await asyncio.sleep(1.0)  # ten times the restart delay: zone-a would be back by now
    assert pids(state_file)["worker@zone-a"] is None
    assert "worker@zone-a exited with signal SIGKILL; not restarted: zone-a is held down" in (
        output.getvalue()
    )

    release_zone(holds, "zone-a")
    await eventually(lambda: restarted("worker@zone-a"), within=WITHIN)
    assert "zone-a released; restarting worker@zone-a" in output.getvalue()
    restarts = {state.name: state.restarts for state in supervisor.snapshot()}
    assert restarts == {"worker@zone-a": 1, "worker@zone-b": 1, "psp": 1}


async def test_holding_one_zone_leaves_the_others_restarting(
    zoned: tuple[Supervisor, io.StringIO, Path], tmp_path: Path
) -> None:
    _, output, holds = zoned
    state_file = tmp_path / "run" / "supervisor.json"
    hold_zone(holds, "zone-b")
    first = pids(state_file)["worker@zone-a"]
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: pids(state_file)["worker@zone-a"] not in (None, first), within=WITHIN)
    assert "not restarted" not in output.getvalue()
