"""The authorization budget: a PSP that fails briefly is retried, one that stays down past the
budget (counted from the saga's start) ends the step with AuthorizationBudgetSpent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from saga_tasks import authorize_payment, clients
from saga_tasks.errors import AuthorizationBudgetSpent, RetryableError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_budget_is_spent_only_once_its_seconds_have_passed_since_the_start() -> None:
    budget = clients.settings().authorization_budget_seconds
    assert not authorize_payment.budget_spent(iso(NOW - timedelta(seconds=budget - 1)), NOW)
    assert authorize_payment.budget_spent(iso(NOW - timedelta(seconds=budget)), NOW)
    # An execution that does not say when it started keeps the definition's Retry bound.
    assert not authorize_payment.budget_spent(None, NOW)
    assert not authorize_payment.budget_spent("", NOW)


@pytest.mark.parametrize(("age", "raised"), [(5, RetryableError), (600, AuthorizationBudgetSpent)])
def test_a_retryable_failure_becomes_budget_spent_past_the_budget(
    monkeypatch: pytest.MonkeyPatch, age: float, raised: type[Exception]
) -> None:
    def psp_down(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RetryableError("authorize: UNAVAILABLE PSP_UNAVAILABLE")

    monkeypatch.setattr(authorize_payment, "_authorize", psp_down)
    started = datetime.now(UTC) - timedelta(seconds=age)

    with pytest.raises(raised) as caught:
        authorize_payment.handler({"saga_started_at": iso(started)}, None)
    assert type(caught.value) is raised
