"""Wakeups: one waiter per unit of work, all of them on demand, and no leftovers from waiters
that gave up. KeyedWakeups: a key's notification wakes every waiter of that key and no other,
a wake between taking the watch and waiting is kept, and closed watches leave nothing behind."""

from __future__ import annotations

import asyncio

from marketplace_platform.notifications import KeyedWakeups, Wakeups


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


async def test_a_keys_wake_releases_every_waiter_of_that_key_and_no_other() -> None:
    wakeups = KeyedWakeups()

    async def wait_on(key: str) -> bool:
        with wakeups.watch(key) as watch:
            return await watch.wait(within=1.0)

    settled = [asyncio.create_task(wait_on("order-1")) for _ in range(64)]
    other = [asyncio.create_task(wait_on("order-2")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert (wakeups.waiting("order-1"), wakeups.waiting()) == (64, 67)
    wakeups.wake("order-1")
    assert await asyncio.gather(*settled) == [True] * 64
    assert not any(task.done() for task in other)
    wakeups.wake("order-3")  # nobody waits for it: nothing happens, nothing is kept
    wakeups.wake_all()  # a lost LISTEN: everyone looks again
    assert await asyncio.gather(*other) == [True] * 3
    assert wakeups.waiting() == 0


async def test_a_wake_before_the_wait_is_kept_for_the_watch_and_a_wait_rearms_it() -> None:
    wakeups = KeyedWakeups()
    with wakeups.watch("order-1") as watch:
        wakeups.wake("order-1")  # settled while the waiter was still reading
        assert await watch.wait(within=0.01) is True
        assert await watch.wait(within=0.01) is False  # that wake is used up
        later = asyncio.create_task(watch.wait(within=1.0))
        await asyncio.sleep(0.01)
        wakeups.wake("order-1")
        assert await later is True
    # A watch taken after the wake does not see it.
    with wakeups.watch("order-1") as fresh:
        assert await fresh.wait(within=0.01) is False
    assert wakeups.waiting() == 0


async def test_a_wake_with_nobody_waiting_is_kept_once_for_a_single_claimer() -> None:
    wakeups = Wakeups(keep_one=True)
    wakeups.wake_one()  # committed while the claimer was busy claiming: it must look again
    wakeups.wake_one()  # one look finds both: no more than one wake is kept
    assert await wakeups.wait(within=5) is True
    assert await wakeups.wait(within=0.05) is False
    waiting = asyncio.create_task(wakeups.wait(within=5))
    await asyncio.sleep(0)
    wakeups.wake_one()  # someone waits: the wake goes to it, nothing is kept besides
    assert await waiting is True
    assert await wakeups.wait(within=0.05) is False
