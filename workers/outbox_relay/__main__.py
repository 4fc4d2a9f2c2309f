"""Run the outbox relay: `python -m workers.outbox_relay` (or `lag` to print the backlog)."""

from workers.outbox_relay.cli import main

main()
