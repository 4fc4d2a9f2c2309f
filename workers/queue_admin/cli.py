"""Operators' queue tool: list queues with depth and oldest-message age, inspect dead letters,
redrive them, and show the outbox relay's lag.

    python -m workers.queue_admin list
    python -m workers.queue_admin dlq shipping [--limit 20]
    python -m workers.queue_admin redrive shipping [--max 100]
    python -m workers.queue_admin lag
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.db import create_engine
from marketplace_platform.event_bus.rules import load_routing
from marketplace_platform.outbox import outbox_lag
from marketplace_platform.queues import Queues, ReceivedMessage, UnknownQueue
from marketplace_platform.queues.operators import definition_of, describe, every_queue
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.queues.sqs import sqs_queues
from workers.outbox_relay.cli import format_lag_table
from workers.queue_admin.settings import QueueAdminSettings


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run one command; the exit status says whether it worked."""
    parser = argparse.ArgumentParser(prog="python -m workers.queue_admin")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every queue and DLQ: visible, in flight, oldest age")
    inspect = commands.add_parser("dlq", help="the dead letters of a queue")
    inspect.add_argument("queue")
    inspect.add_argument("--limit", type=int, default=20)
    redrive = commands.add_parser("redrive", help="move a queue's dead letters back to it")
    redrive.add_argument("queue")
    redrive.add_argument("--max", type=int, default=None, dest="max_messages")
    commands.add_parser("lag", help="the outbox relay's backlog per schema")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(_run(args, QueueAdminSettings())))


async def _run(args: argparse.Namespace, settings: QueueAdminSettings) -> int:
    engine = create_engine(settings)
    try:
        if args.command == "lag":
            print(format_lag_table(await outbox_lag(engine)))
            return 0
        queues = _queues(settings, engine)
        try:
            if args.command == "list":
                print(await list_queues(queues))
            elif args.command == "dlq":
                print(
                    format_dead_letters(
                        await queues.peek(
                            definition_of(queues, args.queue).dead_letter_queue,
                            max_messages=args.limit,
                        )
                    )
                )
            else:
                moved = await queues.redrive(args.queue, max_messages=args.max_messages)
                print(f"redrove {moved} message(s) to {args.queue}")
        except UnknownQueue as error:
            print(f"unknown queue: {error}", file=sys.stderr)
            return 2
        return 0
    finally:
        await engine.dispose()


def _queues(settings: QueueAdminSettings, engine: AsyncEngine) -> Queues:
    definitions = (
        load_routing(settings.relay_rules_file).prefixed(settings.relay_queue_prefix).queues
    )
    if settings.queue_backend == "sqs":
        return sqs_queues(
            definitions, region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
        )
    return PostgresQueues(engine, definitions)


async def list_queues(queues: Queues) -> str:
    """A table of every declared queue and its DLQ."""
    rows = [depth.stats for depth in await every_queue(queues)]
    lines = [f"{'QUEUE':<32} {'VISIBLE':>8} {'IN FLIGHT':>9} {'OLDEST AGE':>10}"]
    for stats in rows:
        age = "-" if stats.oldest_age_seconds is None else f"{stats.oldest_age_seconds:.1f}s"
        lines.append(f"{stats.name:<32} {stats.visible:>8} {stats.in_flight:>9} {age:>10}")
    return "\n".join(lines)


def format_dead_letters(messages: Sequence[ReceivedMessage]) -> str:
    """One JSON line per dead letter: ids, receives, sent time and what the event is."""
    lines = []
    for message in messages:
        dead = describe(message)
        summary: dict[str, object] = {
            "message_id": dead.message_id,
            "receive_count": dead.receive_count,
            "sent_at": dead.sent_at.isoformat(),
        }
        if dead.undecodable is not None:
            summary["undecodable"] = dead.undecodable
            summary["body"] = dead.body[:500]
        else:
            summary.update(
                event_id=dead.event_id,
                event_type=dead.event_type,
                producer=dead.producer,
                aggregate=f"{dead.aggregate_type}/{dead.aggregate_id}",
            )
        lines.append(json.dumps(summary))
    return "\n".join(lines) if lines else "(no dead letters)"
