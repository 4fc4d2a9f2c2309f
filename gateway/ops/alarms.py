"""Alarms for the console: each rule of deploy/prometheus/rules.yml (its name, severity,
summary and CloudWatch alarm read from the file, its threshold from the end of its expression)
evaluated now from the data its metric comes from, without Prometheus:

- CheckoutCompensationParked: executions parked (redrivable, marketplace_platform.saga.redrive)
  that stopped in the last 10 minutes; the metric counts every FAILED execution, cancellations
  too, the console only those an operator can act on;
- CheckoutSagaStuck: RUNNING executions in one state longer than RELAY_STUCK_AFTER_SECONDS;
- CheckoutDeadLetterQueueNotEmpty: the deepest DLQ's messages;
- CheckoutOutboxLag: the oldest unpublished outbox row's age, over every schema;
- CheckoutPspBreakerOpen: checkout_psp_breaker_open read from the payment process's metrics
  endpoint; unknown (value null, not firing) when none is configured or it does not answer.

A rule's `for:` is not waited out: the console shows the condition as it stands.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ops import tables
from gateway.ops.database import reading
from marketplace_platform.outbox import outbox_lag
from marketplace_platform.queues import Queues
from marketplace_platform.queues.operators import every_queue
from marketplace_platform.saga.local import HistoryEvent, history_event
from marketplace_platform.saga.redrive import redrive_point
from marketplace_platform.saga.tables import executions, history

PARKED_WINDOW_SECONDS = 600
PARKED_CANDIDATES = 500  # FAILED executions of the window looked at, newest first
BREAKER_METRIC = "checkout_psp_breaker_open"
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_THRESHOLD = re.compile(r"(>=|<=|==|!=|>|<)\s*(-?[0-9.]+)\s*$")
_TEMPLATE = re.compile(r"\{\{\s*\$(value|labels\.(\w+))\s*\}\}")


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule as the file declares it."""

    name: str
    severity: str
    summary: str
    cloudwatch_alarm: str
    compare: Callable[[float, float], bool]
    threshold: float

    def fires(self, value: float | None) -> bool:
        """Whether `value` meets the rule's condition (an unknown value never does)."""
        return value is not None and self.compare(value, self.threshold)

    def render(self, value: float | None, labels: Mapping[str, str]) -> str:
        """The summary with `{{ $value }}` and `{{ $labels.x }}` filled in."""

        def fill(match: re.Match[str]) -> str:
            if match.group(1) == "value":
                return "unknown" if value is None else _number(value)
            return labels.get(match.group(2), "")

        return _TEMPLATE.sub(fill, self.summary)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def load_rules(path: Path) -> list[AlertRule]:
    """Every alerting rule of a Prometheus rules file."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = []
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            found = _THRESHOLD.search(str(rule["expr"]))
            if found is None:
                raise ValueError(f"{rule['alert']}: no threshold at the end of its expression")
            annotations = rule.get("annotations", {})
            rules.append(
                AlertRule(
                    name=str(rule["alert"]),
                    severity=str(rule.get("labels", {}).get("severity", "")),
                    summary=str(annotations.get("summary", "")),
                    cloudwatch_alarm=str(annotations.get("cloudwatch_alarm", "none")),
                    compare=_COMPARISONS[found.group(1)],
                    threshold=float(found.group(2)),
                )
            )
    return rules


@dataclass(frozen=True)
class Reading:
    """What an evaluation found: a value (None: unknown), its labels, what it points at."""

    value: float | None
    panel: str
    ref: str | None = None
    labels: Mapping[str, str] | None = None
    unknown_because: str | None = None


async def _parked(connection: AsyncConnection) -> Reading:
    recent = (
        await connection.execute(
            sa.select(executions.c.id, executions.c.name, executions.c.status)
            .where(
                executions.c.status == "FAILED",
                executions.c.stopped_at
                > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, PARKED_WINDOW_SECONDS),
            )
            .order_by(executions.c.stopped_at.desc())
            .limit(PARKED_CANDIDATES)
        )
    ).all()
    events: dict[Any, list[HistoryEvent]] = {row.id: [] for row in recent}
    if recent:
        rows = await connection.execute(
            sa.select(history)
            .where(history.c.execution_id.in_(list(events)))
            .order_by(history.c.execution_id, history.c.seq)
        )
        for row in rows:
            events[row.execution_id].append(history_event(row))
    parked = [row.name for row in recent if redrive_point(row.status, events[row.id])]
    return Reading(float(len(parked)), "executions", parked[0] if parked else None)


async def _stuck(connection: AsyncConnection, bound_seconds: float) -> Reading:
    stuck = executions.c.state_entered_at < sa.func.now() - sa.func.make_interval(
        0, 0, 0, 0, 0, 0, bound_seconds
    )
    row = (
        await connection.execute(
            sa.select(
                sa.func.count().label("stuck"),
                sa.func.min(executions.c.name).label("one"),
            ).where(executions.c.status == "RUNNING", stuck)
        )
    ).one()
    return Reading(float(row.stuck), "executions", row.one)


async def _outbox_lag(engine: AsyncEngine) -> Reading:
    aged = [
        (lag.oldest_age_seconds, lag.schema)
        for lag in await outbox_lag(engine, list(tables.outboxes))
        if lag.oldest_age_seconds is not None
    ]
    if not aged:
        return Reading(0.0, "queues")
    age, schema = max(aged)
    return Reading(age, "queues", schema, {"schema": schema})


async def _dead_letters(queues: Queues) -> Reading:
    deepest: tuple[int, str, str] | None = None
    for depth in await every_queue(queues):
        if depth.source is None:
            continue
        count = depth.stats.visible + depth.stats.in_flight
        if deepest is None or count > deepest[0]:
            deepest = (count, depth.stats.name, depth.source)
    if deepest is None:
        return Reading(0.0, "queues")
    return Reading(float(deepest[0]), "queues", deepest[2], {"queue": deepest[1]})


async def breaker_reading(url: str | None, timeout_seconds: float) -> Reading:
    """The PSP breaker's state from the payment process's metrics (None: unknown)."""
    if url is None:
        return Reading(None, "payment", unknown_because="no payment metrics endpoint configured")
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds) as client:
            answer = await client.get(url)
            answer.raise_for_status()
    except httpx.HTTPError as error:
        return Reading(None, "payment", unknown_because=f"payment metrics unreachable: {error!r}")
    values = [
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == BREAKER_METRIC
    ]
    if not values:
        return Reading(None, "payment", unknown_because=f"{BREAKER_METRIC} not exported")
    return Reading(max(values), "payment")


async def evaluate(
    rules: list[AlertRule],
    *,
    engine: AsyncEngine,
    queues: Queues,
    stuck_after_seconds: float,
    payment_metrics_url: str | None,
    payment_metrics_timeout_seconds: float,
) -> list[dict[str, Any]]:
    """Every rule with its current value and whether it fires."""
    async with reading(engine) as connection:
        readings = {
            "CheckoutCompensationParked": await _parked(connection),
            "CheckoutSagaStuck": await _stuck(connection, stuck_after_seconds),
        }
    readings["CheckoutOutboxLag"] = await _outbox_lag(engine)
    readings["CheckoutDeadLetterQueueNotEmpty"] = await _dead_letters(queues)
    readings["CheckoutPspBreakerOpen"] = await breaker_reading(
        payment_metrics_url, payment_metrics_timeout_seconds
    )
    alarms = []
    for rule in rules:
        found = readings.get(rule.name)
        if found is None:
            found = Reading(None, "orders", unknown_because="the console cannot evaluate this rule")
        summary = rule.render(found.value, found.labels or {})
        if found.unknown_because is not None:
            summary = f"unknown: {found.unknown_because} ({summary})"
        alarms.append(
            {
                "name": rule.name,
                "severity": rule.severity,
                "firing": rule.fires(found.value),
                "value": found.value,
                "summary": summary,
                "points_at": {"panel": found.panel, "ref": found.ref},
                "cloudwatch_alarm": rule.cloudwatch_alarm,
            }
        )
    return alarms
