"""`python -m workers.outbox_relay [run]` relays; `... lag` prints each outbox's backlog."""

from __future__ import annotations

import argparse
import asyncio
import sys

from marketplace_platform.db import create_engine
from marketplace_platform.outbox import OutboxLag, outbox_lag
from workers.outbox_relay import bootstrap
from workers.outbox_relay.settings import OutboxRelaySettings


def main(argv: list[str] | None = None) -> None:
    """Run the relay, or print the outbox lag."""
    parser = argparse.ArgumentParser(prog="python -m workers.outbox_relay")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="relay outbox rows to the event bus (the default)")
    commands.add_parser("lag", help="unpublished rows and the oldest one's age, per schema")
    args = parser.parse_args(argv)
    if args.command in (None, "run"):
        bootstrap.main()
        return
    sys.exit(asyncio.run(_print_lag()))


async def _print_lag() -> int:
    settings = OutboxRelaySettings()
    engine = create_engine(settings)
    try:
        lags = await outbox_lag(engine, settings.schema_list())
    finally:
        await engine.dispose()
    print(format_lag_table(lags))
    return 0


def format_lag_table(lags: list[OutboxLag]) -> str:
    """The lag as a table an operator reads: schema, unpublished rows, oldest age."""
    lines = [f"{'SCHEMA':<20} {'UNPUBLISHED':>11} {'OLDEST AGE':>10}"]
    for lag in lags:
        age = "-" if lag.oldest_age_seconds is None else f"{lag.oldest_age_seconds:.1f}s"
        lines.append(f"{lag.schema:<20} {lag.unpublished:>11} {age:>10}")
    return "\n".join(lines)
