"""The state file: which process runs with which pid where, for tests and operators."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

STATE_FILE = Path("run") / "supervisor.json"  # under the supervisor's data directory


@dataclass(frozen=True)
class ProcessState:
    """One supervised process as the state file shows it."""

    name: str
    pid: int | None
    address: str | None
    restarts: int
    zone: str | None = None  # the zone it runs in (local_supervisor.stack); None: no zone


def state_file_path(data_dir: Path) -> Path:
    """Where a supervisor run on `data_dir` keeps its state file."""
    return data_dir / STATE_FILE


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


def read_state(path: Path) -> list[ProcessState]:
    """The processes the state file names ([] while there is none, e.g. before the first write)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        ProcessState(
            name=str(entry["name"]),
            pid=None if entry["pid"] is None else int(entry["pid"]),
            address=entry["address"],
            restarts=int(entry["restarts"]),
            zone=entry.get("zone"),
        )
        for entry in document["processes"]
    ]
