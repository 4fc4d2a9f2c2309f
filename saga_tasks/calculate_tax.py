"""Task CalculateTax: the checkout service computes and stores the order's tax and total."""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from saga_tasks import clients, wire
from saga_tasks.errors import translate

STEP = "tax"
RAISES = frozenset({"RetryableError", "StepFailed", "OrderCancelRequested"})
REQUIRES = frozenset({"order_id"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id"} -> {"tax": money, "total": money}."""
    key = wire.step_key(event, STEP)
    request = pb.CalculateTaxRequest(idempotency_key=key, order_id=wire.order_id(event))
    try:
        response = await clients.invoke(
            clients.checkout().CalculateTax, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    return {"tax": wire.money_to_json(response.tax), "total": wire.money_to_json(response.total)}


handler = clients.blocking(run)
