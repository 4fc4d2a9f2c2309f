"""The chaos harness's PSP phases against the real PSP simulator: a phase meant for confirmed
orders (the outage after the pivot) is not put in force while no order of the run is CONFIRMED,
even when the load has reached its moment, so a slow stack whose sagas lag behind the load
still has orders that ship before the PSP goes down; once one is, it starts."""

from __future__ import annotations

import asyncio

from tests.support.psp import RunningPsp
from verification.faults import FaultLog, Progress, run_psp_phases
from verification.plan import PspPhase


async def faults_in_force(psp: RunningPsp) -> dict[str, object]:
    answer = await psp.http.get("/admin/faults")
    answer.raise_for_status()
    return dict(answer.json())


async def test_a_phase_for_confirmed_orders_waits_for_the_first_confirmed_order(
    psp: RunningPsp,
) -> None:
    await psp.set_faults()
    confirmed = asyncio.Event()

    async def any_confirmed() -> bool:
        return confirmed.is_set()

    progress = Progress(1)
    await progress.advance()  # the load is past the phase's moment already
    log = FaultLog()
    phase = PspPhase(at_progress=0.5, faults={"error_rate": 1.0}, after_first_confirmed=True)
    running = asyncio.create_task(
        run_psp_phases(psp.http, [phase], progress, log, any_confirmed=any_confirmed)
    )
    try:
        await asyncio.sleep(1.5)
        assert log.psp_phases == []
        assert (await faults_in_force(psp))["error_rate"] == 0
        confirmed.set()
        await asyncio.wait_for(running, 10)
        assert (await faults_in_force(psp))["error_rate"] == 1.0
        assert len(log.psp_phases) == 1
    finally:
        running.cancel()
        await psp.set_faults()
