"""The operator console's backend, served by the gateway under /ops: read-only views of the
platform's PostgreSQL (orders and their timeline, saga executions, queues and dead letters,
stock, alarms) and of the trace files, and two actions (redrive a parked saga execution, redrive
a queue's dead letters). Admin scope only. The page itself is in gateway/ops/static/."""
