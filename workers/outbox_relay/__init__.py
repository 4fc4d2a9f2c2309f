"""The outbox relay: publishes every service's outbox rows to the event bus, at least once,
in order per aggregate; several relays can run side by side."""
