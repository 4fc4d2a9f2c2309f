"""Run the saga engine: `python -m workers.saga_engine` (or `history NAME` / `describe NAME`)."""

from workers.saga_engine.cli import main

main()
