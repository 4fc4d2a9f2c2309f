"""`python -m workers.saga_engine [run]`, `... history NAME`, `... describe NAME`,
`... redrive NAME` (a parked execution again from the state that failed)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from marketplace_platform.db import create_engine
from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.saga.redrive import ExecutionNotFound, NotRedrivable, redrive_execution
from workers.saga_engine import bootstrap
from workers.saga_engine.settings import SagaEngineSettings


def main(argv: list[str] | None = None) -> None:
    """Run the engine, print one execution's history or description, or redrive it."""
    parser = argparse.ArgumentParser(prog="python -m workers.saga_engine")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the saga engine (the default)")
    for name, text in (("history", "print an execution's events"), ("describe", "its status")):
        command = commands.add_parser(name, help=text)
        command.add_argument("name", help="the execution name (the order id)")
    redrive = commands.add_parser("redrive", help="run a parked (FAILED) execution again")
    redrive.add_argument("name", help="the execution name (the order id)")
    args = parser.parse_args(argv)
    if args.command in (None, "run"):
        bootstrap.main()
        return
    if args.command == "redrive":
        sys.exit(asyncio.run(redrive_command(args.name, SagaEngineSettings())))
    sys.exit(asyncio.run(_show(args.command, args.name)))


async def redrive_command(name: str, settings: SagaEngineSettings) -> int:
    """Redrive `name` and say where it resumes; 1 if there is no such execution, 2 if it is
    not parked."""
    engine = create_engine(settings)
    try:
        redriven = await redrive_execution(engine, name, actor=f"cli:{getpass.getuser()}")
    except ExecutionNotFound:
        print(f"no execution named {name}", file=sys.stderr)
        return 1
    except NotRedrivable as refusal:
        print(f"not redrivable: {refusal}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    print(f"redrove {name} (redrive {redriven.redrive_count}): RUNNING at {redriven.state}")
    return 0


async def _show(command: str, name: str) -> int:
    engine = create_engine(SagaEngineSettings())
    try:
        store = LocalSagaStarter(engine)
        if command == "describe":
            description = await store.describe(name)
            if description is None:
                print(f"no execution named {name}", file=sys.stderr)
                return 1
            print(json.dumps(vars(description), default=str, indent=2))
            return 0
        events = await store.history(name)
        if not events:
            print(f"no execution named {name}", file=sys.stderr)
            return 1
        for event in events:
            print(format_event(event.seq, event.at, event.type, event.state, event.payload))
        return 0
    finally:
        await engine.dispose()


def format_event(seq: int, at: Any, kind: str, state: str | None, payload: Any) -> str:
    """One history event as a line: seq, time, type, state and a compact payload."""
    detail = json.dumps(payload, separators=(",", ":"), default=str) if payload else ""
    return f"{seq:>4}  {at:%H:%M:%S.%f}  {kind:<24} {state or '-':<32} {detail}"
