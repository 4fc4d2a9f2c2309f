"""Children that die with the supervisor, so a SIGKILLed supervisor leaves no services behind."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_supervisor_hook(
    death_signal: signal.Signals = signal.SIGKILL,
) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `death_signal` when the supervisor dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    # Resolved before fork: the hook runs between fork and exec in a process that may have
    # had other threads (gRPC's), so it only makes one C call and reads the parent pid.
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    supervisor_pid = os.getpid()
    signal_number = int(death_signal)

    def die_with_supervisor() -> None:
        prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
        if os.getppid() != supervisor_pid:
            # The supervisor died before prctl took effect: nobody would ever signal us.
            os._exit(1)

    return die_with_supervisor
