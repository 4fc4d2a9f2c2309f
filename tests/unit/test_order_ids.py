"""Order ids are derived from the purchase: (customer, idempotency key, cart) names one order,
the same in every Region, and any other purchase another; an order's shipment of a merchant is
named by the two."""

from __future__ import annotations

import uuid

from marketplace_platform.ids import derived_id
from services.checkout.domain.idempotency import ORDER_ID_NAMESPACE, order_id_for
from services.checkout.domain.order import shipment_id_for

CART = uuid.UUID("0190f2a4-6b1e-7c3d-8e5f-1a2b3c4d5e6f")


def test_the_same_purchase_names_the_same_order() -> None:
    first = order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=CART)
    again = order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=uuid.UUID(str(CART)))
    assert first == again
    # A fixed namespace: the id does not depend on the process, the host or the Region.
    assert first == derived_id(ORDER_ID_NAMESPACE, "ada", "k-1", str(CART))


def test_any_field_different_names_another_order() -> None:
    first = order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=CART)
    others = {
        order_id_for(customer_id="bob", idempotency_key="k-1", cart_id=CART),
        order_id_for(customer_id="ada", idempotency_key="k-2", cart_id=CART),
        order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=uuid.uuid4()),
    }
    assert len(others) == 3
    assert first not in others


def test_the_fields_cannot_run_into_each_other() -> None:
    # Each part is length-prefixed: moving characters from one field to the next is another id.
    assert order_id_for(customer_id="ad", idempotency_key="ak-1", cart_id=CART) != order_id_for(
        customer_id="ada", idempotency_key="k-1", cart_id=CART
    )
    assert derived_id(ORDER_ID_NAMESPACE, "ab", "c") != derived_id(ORDER_ID_NAMESPACE, "a", "bc")


def test_an_order_id_is_a_uuid_version_8_of_the_rfc_variant() -> None:
    order_id = order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=CART)
    assert (order_id.version, order_id.variant) == (8, uuid.RFC_4122)
    assert derived_id(uuid.uuid4(), "ada") != derived_id(uuid.uuid4(), "ada")  # per namespace


def test_an_orders_shipment_of_a_merchant_is_named_by_the_order_and_the_merchant() -> None:
    order_id = order_id_for(customer_id="ada", idempotency_key="k-1", cart_id=CART)
    acme = shipment_id_for(order_id, "acme")
    assert acme == shipment_id_for(uuid.UUID(str(order_id)), "acme")  # confirmed again
    assert acme != shipment_id_for(order_id, "globex")
    assert acme != shipment_id_for(uuid.uuid4(), "acme")
    assert acme.version == 8
