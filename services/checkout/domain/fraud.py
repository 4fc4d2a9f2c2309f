"""The fraud check: a deterministic score from the order's payment method and size."""

from __future__ import annotations

from marketplace_platform.money import Money
from services.checkout.domain.order import FraudAssessment, FraudDecision

# A PSP's test mode flags this payment method as highest risk; we reject it like a real
# risk engine would reject a highest-risk verdict.
HIGHEST_RISK_METHOD = "pm_card_riskLevelHighest"
REJECT_AT_SCORE = 80
LARGE_ORDER_MINOR = 100_000


def assess(*, payment_method: str, total: Money) -> FraudAssessment:
    """The verdict for an order: REJECT at or above the reject score, else APPROVE."""
    if payment_method == HIGHEST_RISK_METHOD:
        return FraudAssessment(FraudDecision.REJECT, 95, "payment method flagged highest risk")
    score = 10 + (20 if total.amount_minor >= LARGE_ORDER_MINOR else 0)
    decision = FraudDecision.REJECT if score >= REJECT_AT_SCORE else FraudDecision.APPROVE
    return FraudAssessment(decision, score, "no risk signals" if score < 20 else "large order")
