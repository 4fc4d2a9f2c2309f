"""Wakeups for a loop that takes work in passes (a consumer's receives, the relay's batches)
and must not miss a notification that arrives while it is not waiting."""

from __future__ import annotations

from marketplace_platform.notifications import Wakeups


class KeptWakeups(Wakeups):
    """Wakeups whose wake, when nobody waits, is kept for the next wait: work notified while
    the loop was busy, or between a pass that found nothing and its wait (too late for that
    pass to see), sends it round once more instead of leaving the work to the fallback poll."""

    def __init__(self) -> None:
        super().__init__()
        self._kept = False

    def wake_one(self) -> None:
        """Wake a waiter, or keep the wake for the next wait."""
        self._kept = True
        super().wake_one()

    def wake_all(self) -> None:
        """Wake every waiter, and keep the wake for the next wait."""
        self._kept = True
        super().wake_all()

    async def wait(self, within: float) -> bool:
        """Return at once for a kept wake; else wait to be woken, or `within` seconds."""
        if not self._kept:
            await super().wait(within)
        woken, self._kept = self._kept, False
        return woken
