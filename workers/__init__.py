"""Background workers: the saga engine, the outbox relay and the side-effect consumers."""
