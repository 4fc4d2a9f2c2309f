"""Test handlers for a saga engine run as a real process (SAGA_HANDLERS points here).

Each call appends a line to `$SAGA_TEST_LOG_DIR/calls.log`; `gate` blocks until the file
`open-<order_id>` appears in that folder, so a test can hold an execution mid-task.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

GATE_LIMIT_SECONDS = 120.0


def _log_dir() -> Path:
    return Path(os.environ["SAGA_TEST_LOG_DIR"])


def _log(kind: str, event: dict[str, Any]) -> None:
    line = json.dumps({"kind": kind, "step": event.get("step"), "order_id": event["order_id"]})
    with (_log_dir() / "calls.log").open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Note the call and answer with the step's name."""
    _log("record", event)
    return {"done": event["step"]}


def gate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Note the call, then wait (bounded) until the test opens the gate for this order."""
    _log("gate", event)
    opened = _log_dir() / f"open-{event['order_id']}"
    deadline = time.monotonic() + GATE_LIMIT_SECONDS
    while not opened.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate for {event['order_id']} never opened")
        time.sleep(0.02)
    return {"done": event["step"]}


HANDLERS = {"RecordFunctionArn": record, "GateFunctionArn": gate}
