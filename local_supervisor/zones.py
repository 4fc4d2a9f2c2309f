"""Zones held down: while a zone is held, the supervisor restarts none of its processes that
end, so a drill can take a whole zone away (SIGKILL every process of it) and keep it away, as
losing an Availability Zone would, then release it and watch it come back.

The holds are a file under the supervisor's data directory, one zone a line, replaced
atomically; the supervisor reads it whenever a process of a zone ends, and clears it when it
starts and stops (a hold never outlives the run that was told of it)."""

from __future__ import annotations

import os
from pathlib import Path

HELD_ZONES_FILE = Path("run") / "held-zones"  # under the supervisor's data directory


def held_zones_path(data_dir: Path) -> Path:
    """Where a supervisor run on `data_dir` looks for the zones held down."""
    return data_dir / HELD_ZONES_FILE


def held_zones(path: Path) -> frozenset[str]:
    """The zones held down now (none while there is no file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def hold_zone(path: Path, zone: str) -> None:
    """Hold `zone` down: its processes that end are not restarted until it is released."""
    _write(path, held_zones(path) | {zone})


def release_zone(path: Path, zone: str) -> None:
    """Release `zone`: its processes that ended are restarted now."""
    _write(path, held_zones(path) - {zone})


def clear_holds(path: Path) -> None:
    """Release every zone."""
    path.unlink(missing_ok=True)


def _write(path: Path, zones: frozenset[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text("".join(f"{zone}\n" for zone in sorted(zones)))
    scratch.replace(path)
