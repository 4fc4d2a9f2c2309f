"""Cart's gRPC servicer: proto -> command -> handler -> proto, nothing more.

Field rules were already enforced by the platform's boundary interceptor.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import grpc

from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.cart.v1 import cart_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace_platform.money import Money
from services.cart.domain.cart import Cart, CartLine, subtotal
from services.cart.domain.catalog import DEFAULT_MERCHANT, Product
from services.cart.domain.pricing import PricedCart
from services.cart.service_layer import carts, catalog
from services.cart.service_layer.deps import CartDeps

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class CartServicer(pb_grpc.CartServiceServicer):
    """Translates CartService calls to the catalog and cart handlers."""

    def __init__(self, deps: CartDeps) -> None:
        self.deps = deps

    async def UpsertProduct(
        self, request: pb.UpsertProductRequest, context: Context
    ) -> pb.UpsertProductResponse:
        command = catalog.UpsertProduct(
            idempotency_key=request.idempotency_key,
            product=Product(
                sku=request.sku.value,
                merchant_id=request.merchant_id.value or DEFAULT_MERCHANT,
                name=request.name,
                price=Money(request.price.amount_minor, request.price.currency),
                listed=request.listed if request.HasField("listed") else True,
            ),
        )
        product = await catalog.upsert_product(command, self.deps)
        return pb.UpsertProductResponse(product=product_to_proto(product))

    async def GetProduct(
        self, request: pb.GetProductRequest, context: Context
    ) -> pb.GetProductResponse:
        product = await catalog.get_product(request.sku.value, self.deps)
        return pb.GetProductResponse(product=product_to_proto(product))

    async def CreateCart(
        self, request: pb.CreateCartRequest, context: Context
    ) -> pb.CreateCartResponse:
        command = carts.CreateCart(
            idempotency_key=request.idempotency_key, customer_id=request.customer_id.value
        )
        cart = await carts.create_cart(command, self.deps)
        return pb.CreateCartResponse(cart=self.cart_to_proto(cart))

    async def GetCart(self, request: pb.GetCartRequest, context: Context) -> pb.GetCartResponse:
        cart = await carts.get_cart(
            uuid.UUID(request.cart_id.value), request.customer_id.value, self.deps
        )
        return pb.GetCartResponse(cart=self.cart_to_proto(cart))

    async def SetItemQuantity(
        self, request: pb.SetItemQuantityRequest, context: Context
    ) -> pb.SetItemQuantityResponse:
        command = carts.SetItemQuantity(
            idempotency_key=request.idempotency_key,
            cart_id=uuid.UUID(request.cart_id.value),
            customer_id=request.customer_id.value,
            sku=request.sku.value,
            quantity=request.quantity,
            expected_version=request.expected_version,
        )
        cart = await carts.set_item_quantity(command, self.deps)
        return pb.SetItemQuantityResponse(cart=self.cart_to_proto(cart))

    async def RemoveItem(
        self, request: pb.RemoveItemRequest, context: Context
    ) -> pb.RemoveItemResponse:
        command = carts.RemoveItem(
            idempotency_key=request.idempotency_key,
            cart_id=uuid.UUID(request.cart_id.value),
            customer_id=request.customer_id.value,
            sku=request.sku.value,
            expected_version=request.expected_version,
        )
        cart = await carts.remove_item(command, self.deps)
        return pb.RemoveItemResponse(cart=self.cart_to_proto(cart))

    async def PriceCart(
        self, request: pb.PriceCartRequest, context: Context
    ) -> pb.PriceCartResponse:
        priced = await carts.price_cart(
            uuid.UUID(request.cart_id.value), request.customer_id.value, self.deps
        )
        return pb.PriceCartResponse(priced_cart=priced_to_proto(priced))

    async def MarkCheckedOut(
        self, request: pb.MarkCheckedOutRequest, context: Context
    ) -> pb.MarkCheckedOutResponse:
        command = carts.MarkCheckedOut(
            idempotency_key=request.idempotency_key,
            cart_id=uuid.UUID(request.cart_id.value),
            customer_id=request.customer_id.value,
            order_id=uuid.UUID(request.order_id.value),
        )
        cart = await carts.mark_checked_out(command, self.deps)
        return pb.MarkCheckedOutResponse(cart=self.cart_to_proto(cart))

    def cart_to_proto(self, cart: Cart) -> pb.Cart:
        """The wire form of a cart, with its subtotal."""
        message = pb.Cart(
            cart_id=ids_pb2.CartId(value=str(cart.cart_id)),
            customer_id=ids_pb2.CustomerId(value=cart.customer_id),
            version=cart.version,
            status=pb.CartStatus.Value(f"CART_STATUS_{cart.status.value}"),
            lines=[line_to_proto(line) for line in cart.lines],
            subtotal=money_to_proto(subtotal(cart.lines, self.deps.default_currency)),
        )
        if cart.order_id is not None:
            message.order_id.value = str(cart.order_id)
        message.created_at.FromDatetime(cart.created_at)
        message.updated_at.FromDatetime(cart.updated_at)
        return message


def money_to_proto(money: Money) -> money_pb2.Money:
    """The wire form of an amount."""
    return money_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)


def line_to_proto(line: CartLine) -> pb.CartLine:
    """The wire form of a cart line."""
    return pb.CartLine(
        sku=ids_pb2.Sku(value=line.sku),
        merchant_id=ids_pb2.MerchantId(value=line.merchant_id),
        name=line.name,
        quantity=line.quantity,
        unit_price=money_to_proto(line.unit_price),
        line_total=money_to_proto(line.line_total),
    )


def product_to_proto(product: Product) -> pb.Product:
    """The wire form of a product."""
    message = pb.Product(
        sku=ids_pb2.Sku(value=product.sku),
        merchant_id=ids_pb2.MerchantId(value=product.merchant_id),
        name=product.name,
        price=money_to_proto(product.price),
        listed=product.listed,
    )
    if product.created_at is not None:
        message.created_at.FromDatetime(product.created_at)
    if product.updated_at is not None:
        message.updated_at.FromDatetime(product.updated_at)
    return message


def priced_to_proto(priced: PricedCart) -> pb.PricedCart:
    """The wire form of a priced cart."""
    cart = priced.cart
    message = pb.PricedCart(
        cart_id=ids_pb2.CartId(value=str(cart.cart_id)),
        customer_id=ids_pb2.CustomerId(value=cart.customer_id),
        version=cart.version,
        status=pb.CartStatus.Value(f"CART_STATUS_{cart.status.value}"),
        lines=[line_to_proto(line) for line in priced.lines],
        subtotal=money_to_proto(priced.subtotal),
        problems=[
            pb.PricingProblem(
                sku=ids_pb2.Sku(value=problem.sku) if problem.sku else None,
                kind=pb.PricingProblemKind.Value(f"PRICING_PROBLEM_KIND_{problem.kind.value}"),
                detail=problem.detail,
            )
            for problem in priced.problems
        ],
    )
    if cart.order_id is not None:
        message.order_id.value = str(cart.order_id)
    message.priced_at.FromDatetime(priced.priced_at)
    return message
