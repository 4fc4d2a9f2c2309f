"""A span per state execution, in the trace of the PlaceOrder that started the execution.

The execution's row keeps the traceparent of the call that started it (saga.executions
.traceparent), so every state's span, on whichever runner and however much later it runs,
joins that trace: its parent is the starting call's span, and the gRPC client spans of a
Task's call (and the servers they reach) become the state span's children. With no tracer
provider installed the spans are OpenTelemetry's no-ops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Status, StatusCode

from workers.saga_engine.asl.interpreter import Paused, Position, Step
from workers.saga_engine.store import Claim

_tracer = trace.get_tracer(__name__)


@contextmanager
def state_span(claim: Claim, position: Position) -> Iterator[Span]:
    """The span of running `position`'s state once (one attempt); `attempt` counts retries."""
    carrier = {"traceparent": claim.traceparent} if claim.traceparent else {}
    with _tracer.start_as_current_span(
        f"saga.state {position.state}",
        context=propagate.extract(carrier),
        attributes={
            "saga.execution.name": claim.name,
            "saga.execution.id": str(claim.execution_id),
            "saga.state": position.state,
            "saga.attempt": 1 + sum(position.retries),
        },
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield span


def record_step(span: Span, step: Step) -> None:
    """Note on `span` what the step did: each failure (error name, cause) and a retry due."""
    for event in step.events:
        if event.type.endswith("Failed"):
            error = str(event.payload.get("error"))
            span.set_attribute("saga.error", error)
            span.add_event(event.type, {"error": error, "cause": str(event.payload.get("cause"))})
            span.set_status(Status(StatusCode.ERROR, error))
        elif event.type == "RetryScheduled":
            span.set_attribute("saga.retry_scheduled", True)
            span.add_event(
                event.type,
                {
                    "attempt": int(event.payload["attempt"]),
                    "delay_seconds": float(event.payload["delay_seconds"]),
                },
            )
    if isinstance(step.outcome, Paused):
        span.set_attribute("saga.paused_until", step.outcome.until.isoformat())
