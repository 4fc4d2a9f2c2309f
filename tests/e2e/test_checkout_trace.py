"""One checkout, one trace: on the running stack with every process exporting OTLP/JSON lines
(OTEL_TRACES_EXPORTER=jsonl, ratio 1), the spans of one checkout — the gateway's HTTP server
span, the cart/inventory/payment/checkout gRPC servers, the saga's states, the outbox relay's
publish, a consumer and the PSP call — all carry the trace id the checkout request started."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketplace_platform.trace_files import read_spans
from tests.support import shopper
from tests.support.stack import LaunchedStack, running_stack

pytestmark = pytest.mark.stack

CONSUMERS = {"shipping", "email", "invoice", "analytics", "payment-release", "stock-release"}
WITHIN = 60.0


@pytest.fixture
async def traced_stack(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[LaunchedStack, Path]]:
    traces = tmp_path / "traces"
    settings = {
        "OTEL_TRACES_EXPORTER": "jsonl",
        "OTEL_TRACES_JSONL_DIR": str(traces),
        "OTEL_TRACES_SAMPLER_ARG": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: batches reach the files soon after the spans end
    }
    async with running_stack(database_url, tmp_path / "stack", settings) as stack:
        await stack.wait_for_line("all services SERVING", within=90)
        yield stack, traces


def _orphans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans whose parent is not in `spans`."""
    ids = {span["spanId"] for span in spans}
    return [span for span in spans if span.get("parentSpanId") not in ids]


def _missing(spans: list[dict[str, Any]]) -> list[str]:
    """What the trace still lacks of the hops one checkout must show."""

    def has(service: str, kind: str, name_part: str = "") -> bool:
        return any(
            span["service"] == service and span["kind"] == kind and name_part in span["name"]
            for span in spans
        )

    wanted = {
        "gateway HTTP server span": has("gateway", "SPAN_KIND_SERVER"),
        **{
            f"{service} gRPC server span": has(service, "SPAN_KIND_SERVER", "marketplace.")
            for service in ("cart", "inventory", "payment", "checkout")
        },
        "saga state spans": sum(span["name"].startswith("saga.state ") for span in spans) >= 3,
        "relay publish span": has("outbox-relay", "SPAN_KIND_PRODUCER", "outbox.publish"),
        "consumer span": any(span["service"] in CONSUMERS for span in spans),
        "PSP client span": has("payment", "SPAN_KIND_CLIENT", "POST"),
        # One tree: only the gateway's span has its parent outside (the caller's, made up in
        # the request's traceparent). Polled too, since a parent may reach its file later.
        "every parent in the trace": len(_orphans(spans)) == 1,
    }
    return [hop for hop, present in wanted.items() if not present]


async def test_one_checkout_is_one_trace_through_every_hop(
    traced_stack: tuple[LaunchedStack, Path],
) -> None:
    stack, traces = traced_stack
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as http:
        sku = await shopper.stocked_sku(http, on_hand=5, price_minor=1250)
        cart_id = await shopper.cart_holding(http, customer, sku, 1)
        answer = await http.post(
            "/v1/checkouts",
            json={
                "cart_id": cart_id,
                "payment_method": "pm_card_visa",
                "shipping_address": shopper.ADDRESS,
            },
            headers=shopper.bearer(customer)
            | {"Idempotency-Key": uuid.uuid4().hex, "traceparent": traceparent},
        )
        assert answer.status_code in (200, 201, 202), answer.text
        order = await shopper.settled(http, customer, answer.json()["order_id"])
        assert order["status"] in ("CONFIRMED", "SHIPPED"), order

    spans: list[dict[str, Any]] = []
    async with asyncio.timeout(WITHIN):
        while True:
            every = await asyncio.to_thread(lambda: list(read_spans(traces)))
            spans = [span for span in every if span["traceId"] == trace_id]
            if not _missing(spans):
                break
            await asyncio.sleep(0.3)
    assert not _missing(spans)
    assert [span["name"] for span in _orphans(spans)] == ["POST /v1/checkouts"]
