"""Wakeups: one waiter per unit of work, all of them on demand, and no leftovers from waiters
that gave up."""

from __future__ import annotations

import asyncio

from marketplace_platform.notifications import Wakeups


async def test_wake_one_wakes_exactly_one_of_the_waiters() -> None:
    wakeups = Wakeups()
    waiters = [asyncio.create_task(wakeups.wait(within=1.0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    wakeups.wake_one()
    woken = await asyncio.gather(*waiters)
    assert sorted(woken) == [False] * 4 + [True]


async def test_wake_all_wakes_every_waiter_and_no_later_one() -> None:
    wakeups = Wakeups()
    waiters = [asyncio.create_task(wakeups.wait(within=1.0)) for _ in range(3)]
    await asyncio.sleep(0.01)
    wakeups.wake_all()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await wakeups.wait(within=0.05) is False


async def test_a_wake_with_nobody_waiting_is_not_kept_and_given_up_waiters_are_forgotten() -> None:
    wakeups = Wakeups()
    wakeups.wake_one()  # a busy engine finds the work itself: nothing is owed
    for _ in range(50):
        assert await wakeups.wait(within=0.001) is False
    waiter = asyncio.create_task(wakeups.wait(within=1.0))
    await asyncio.sleep(0.01)
    wakeups.wake_one()  # reaches the live waiter, not one of the fifty that gave up
    assert await waiter is True
