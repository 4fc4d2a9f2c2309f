"""The cart service over gRPC, as checkout's CartPort."""

from __future__ import annotations

import uuid

import grpc

from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.cart.v1 import cart_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2
from marketplace_platform.grpc_errors import translated
from marketplace_platform.money import Money
from services.checkout.domain.order import OrderLine
from services.checkout.service_layer.ports import CartPort, CartStatus, PricedCart, PricingProblem

SERVICE = pb.DESCRIPTOR.services_by_name["CartService"].full_name


class GrpcCartPort(CartPort):
    """Calls CartService.PriceCart and MarkCheckedOut, each with its own deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = pb_grpc.CartServiceStub(channel)
        self._timeout = timeout

    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        """Price the customer's cart against the catalog now."""
        response: pb.PriceCartResponse = await translated(
            "cart",
            self._stub.PriceCart(
                pb.PriceCartRequest(
                    cart_id=ids_pb2.CartId(value=str(cart_id)),
                    customer_id=ids_pb2.CustomerId(value=customer_id),
                ),
                timeout=self._timeout,
            ),
        )
        return priced_cart(response.priced_cart)

    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        """Freeze the cart as checked out by the order (idempotent by order)."""
        await translated(
            "cart",
            self._stub.MarkCheckedOut(
                pb.MarkCheckedOutRequest(
                    idempotency_key=f"{order_id}:checked-out",
                    cart_id=ids_pb2.CartId(value=str(cart_id)),
                    customer_id=ids_pb2.CustomerId(value=customer_id),
                    order_id=ids_pb2.OrderId(value=str(order_id)),
                ),
                timeout=self._timeout,
            ),
        )


def priced_cart(wire: pb.PricedCart) -> PricedCart:
    """The contract's PricedCart as the port's."""
    return PricedCart(
        cart_id=uuid.UUID(wire.cart_id.value),
        customer_id=wire.customer_id.value,
        status=(
            CartStatus.CHECKED_OUT if wire.status == pb.CART_STATUS_CHECKED_OUT else CartStatus.OPEN
        ),
        lines=tuple(
            OrderLine(
                sku=line.sku.value,
                merchant_id=line.merchant_id.value or "default",
                name=line.name,
                quantity=line.quantity,
                unit_price=Money(line.unit_price.amount_minor, line.unit_price.currency),
            )
            for line in wire.lines
        ),
        subtotal=Money(wire.subtotal.amount_minor, wire.subtotal.currency),
        problems=tuple(
            PricingProblem(
                kind=pb.PricingProblemKind.Name(problem.kind).removeprefix("PRICING_PROBLEM_KIND_"),
                detail=problem.detail,
                sku=problem.sku.value,
            )
            for problem in wire.problems
        ),
        order_id=uuid.UUID(wire.order_id.value) if wire.order_id.value else None,
    )
