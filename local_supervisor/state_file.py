"""The state file: which process runs with which pid where, for tests and operators."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class ProcessState:
    """One supervised process as the state file shows it."""

    name: str
    pid: int | None
    address: str | None
    restarts: int


def write_state(
    path: Path, *, processes: Sequence[ProcessState], resources: Mapping[str, str]
) -> None:
    """Replace the state file atomically, so a reader never sees half of it."""
    document = {
        "supervisor_pid": os.getpid(),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "processes": [asdict(process) for process in processes],
        "resources": dict(resources),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(document, indent=2) + "\n")
    scratch.replace(path)


def remove_state(path: Path) -> None:
    """Remove the state file once nothing it names runs any more."""
    path.unlink(missing_ok=True)
