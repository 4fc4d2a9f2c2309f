"""Task FraudCheck: the checkout service's verdict on the order; a REJECT is FraudRejected."""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from saga_tasks import clients, wire
from saga_tasks.errors import FraudRejected, StepFailed, translate

STEP = "fraud"
RAISES = frozenset({"RetryableError", "StepFailed", "OrderCancelRequested", "FraudRejected"})
REQUIRES = frozenset({"order_id"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id"} -> {"decision": "APPROVE", "risk_score": int}."""
    key = wire.step_key(event, STEP)
    request = pb.AssessFraudRequest(idempotency_key=key, order_id=wire.order_id(event))
    try:
        response = await clients.invoke(
            clients.checkout().AssessFraud, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    if response.decision == pb.FRAUD_DECISION_REJECT:
        raise FraudRejected(f"risk score {response.risk_score}: {response.reason}")
    if response.decision != pb.FRAUD_DECISION_APPROVE:
        raise StepFailed(f"fraud check answered {pb.FraudDecision.Name(response.decision)}")
    return {"decision": "APPROVE", "risk_score": response.risk_score}


handler = clients.blocking(run)
