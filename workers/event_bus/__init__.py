"""The event bus port's adapters: a local bus routing into PostgreSQL queues, and EventBridge."""
