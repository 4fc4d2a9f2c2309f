"""The saga engine: runs the checkout state machine (Amazon States Language) durably in
PostgreSQL, calling the saga task handlers in-process; the local twin of Step Functions."""
