"""The PSP simulator as a real process: payment intents and their amount rules, declines,
idempotency keys (also under a 20-way race), the listing, durability across a restart, and
every injected fault seen from the caller's side."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keys import idempotency_key as new_key
from tests.support.polling import eventually
from tests.support.psp import PspProcess, RunningPsp

WITHIN = 10.0  # seconds any one awaited event may take before the test fails
SEVEN_DAYS = 7 * 24 * 60 * 60


@pytest.fixture
async def http(psp: RunningPsp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=psp.url, timeout=WITHIN) as client:
        try:
            yield client
        finally:
            await client.put("/admin/faults", json={})


def new_order() -> dict[str, str]:
    """Metadata no other test uses."""
    return {"order_id": f"ord_{uuid.uuid4().hex}", "operation_id": f"op_{uuid.uuid4().hex}"}


def authorization(
    metadata: dict[str, str], *, amount: int = 5000, method: str = "pm_card_visa"
) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "usd",
        "payment_method": method,
        "capture_method": "manual",
        "metadata": metadata,
    }


async def listed(http: httpx.AsyncClient, **metadata: str) -> list[dict[str, Any]]:
    params = {"limit": "100", **{f"metadata[{k}]": v for k, v in metadata.items()}}
    response = await http.get("/v1/payment_intents", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["object"] == "list"
    return list(page["data"])


async def authorized(http: httpx.AsyncClient, amount: int = 5000) -> dict[str, Any]:
    response = await http.post(
        "/v1/payment_intents", json=authorization(new_order(), amount=amount)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def error_of(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json()["error"])


# --- payment intents ---------------------------------------------------------------------


async def test_authorize_capture_and_refund_move_the_amounts(http: httpx.AsyncClient) -> None:
    order = new_order()
    created = await http.post("/v1/payment_intents", json=authorization(order, amount=5000))
    assert created.status_code == 200
    intent = created.json()
    assert intent["id"].startswith("pi_")
    assert intent["object"] == "payment_intent"
    assert (intent["status"], intent["currency"], intent["metadata"]) == (
        "requires_capture",
        "USD",
        order,
    )
    assert (intent["amount"], intent["amount_capturable"], intent["amount_received"]) == (
        5000,
        5000,
        0,
    )
    assert intent["capture_before"] == intent["created"] + SEVEN_DAYS
    assert abs(intent["created"] - time.time()) < 60

    captured = await http.post(
        f"/v1/payment_intents/{intent['id']}/capture", json={"amount_to_capture": 3000}
    )
    assert captured.status_code == 200
    assert captured.json()["status"] == "succeeded"
    assert (captured.json()["amount_received"], captured.json()["amount_capturable"]) == (3000, 0)

    partial = await http.post("/v1/refunds", json={"payment_intent": intent["id"], "amount": 1000})
    assert partial.status_code == 200
    refund = partial.json()
    assert refund["id"].startswith("re_")
    assert (refund["amount"], refund["payment_intent"], refund["status"]) == (
        1000,
        intent["id"],
        "succeeded",
    )
    rest = await http.post("/v1/refunds", json={"payment_intent": intent["id"]})
    assert rest.status_code == 200
    assert rest.json()["amount"] == 2000

    now = (await http.get(f"/v1/payment_intents/{intent['id']}")).json()
    assert (now["status"], now["amount_received"], now["amount_refunded"]) == (
        "succeeded",
        3000,
        3000,
    )
    assert await listed(http, order_id=order["order_id"]) == [now]
    again = await http.post("/v1/refunds", json={"payment_intent": intent["id"], "amount": 1})
    assert again.status_code == 400
    assert error_of(again)["code"] == "amount_too_large"
    nothing_left = await http.post("/v1/refunds", json={"payment_intent": intent["id"]})
    assert (nothing_left.status_code, error_of(nothing_left)["code"]) == (
        400,
        "charge_already_refunded",
    )


async def test_capture_without_an_amount_takes_everything(http: httpx.AsyncClient) -> None:
    intent = await authorized(http, amount=1234)
    captured = await http.post(f"/v1/payment_intents/{intent['id']}/capture")
    assert captured.status_code == 200
    assert (captured.json()["status"], captured.json()["amount_received"]) == ("succeeded", 1234)


async def test_cancel_voids_an_authorization_once(http: httpx.AsyncClient) -> None:
    intent = await authorized(http)
    canceled = await http.post(f"/v1/payment_intents/{intent['id']}/cancel", json={})
    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["amount_capturable"]) == ("canceled", 0)
    for action in ("cancel", "capture"):
        refused = await http.post(f"/v1/payment_intents/{intent['id']}/{action}", json={})
        assert refused.status_code == 400
        assert error_of(refused)["code"] == "payment_intent_unexpected_state"


@pytest.mark.parametrize(
    ("method", "decline_code"),
    [("pm_card_chargeDeclined", "generic_decline"), ("pm_card_riskLevelHighest", "fraudulent")],
)
async def test_a_declined_card_answers_402_and_leaves_a_failed_intent(
    http: httpx.AsyncClient, method: str, decline_code: str
) -> None:
    order = new_order()
    response = await http.post("/v1/payment_intents", json=authorization(order, method=method))
    assert response.status_code == 402
    error = error_of(response)
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        decline_code,
    )
    assert error["payment_intent"]["status"] == "requires_payment_method"
    [failed] = await listed(http, order_id=order["order_id"])
    assert failed["id"] == error["payment_intent"]["id"]
    assert (failed["status"], failed["amount_capturable"]) == ("requires_payment_method", 0)
    assert failed["last_payment_error"]["decline_code"] == decline_code
    capture = await http.post(f"/v1/payment_intents/{failed['id']}/capture")
    assert error_of(capture)["code"] == "payment_intent_unexpected_state"


async def test_amount_rules(http: httpx.AsyncClient) -> None:
    intent = await authorized(http, amount=5000)
    path = f"/v1/payment_intents/{intent['id']}"

    too_early = await http.post("/v1/refunds", json={"payment_intent": intent["id"]})
    assert (too_early.status_code, error_of(too_early)["code"]) == (
        400,
        "payment_intent_unexpected_state",
    )
    too_much = await http.post(f"{path}/capture", json={"amount_to_capture": 5001})
    assert too_much.status_code == 400
    assert (error_of(too_much)["type"], error_of(too_much)["code"]) == (
        "invalid_request_error",
        "amount_too_large",
    )
    assert (await http.get(path)).json() == intent  # the refusal changed nothing

    assert (await http.post(f"{path}/capture", json={"amount_to_capture": 4000})).status_code == 200
    over_refund = await http.post(
        "/v1/refunds", json={"payment_intent": intent["id"], "amount": 4001}
    )
    assert (over_refund.status_code, error_of(over_refund)["code"]) == (400, "amount_too_large")
    late_cancel = await http.post(f"{path}/cancel", json={})
    assert (late_cancel.status_code, error_of(late_cancel)["code"]) == (
        400,
        "payment_intent_unexpected_state",
    )
    assert (await http.get(path)).json()["amount_refunded"] == 0


@pytest.mark.parametrize(
    "change",
    [
        {"payment_method": "pm_card_unknown"},
        {"amount": 0},
        {"amount": -5},
        {"amount": 10.5},
        {"amount": "100"},
        {"amount": True},
        {"currency": "us"},
        {"currency": 840},
        {"metadata": {"order_id": 7}},
        {"capture_method": "automatic"},
        {"surprise": 1},
    ],
)
async def test_bad_authorizations_are_refused_and_create_nothing(
    http: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    order = new_order()
    response = await http.post("/v1/payment_intents", json={**authorization(order), **change})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert await listed(http, order_id=order["order_id"]) == []


async def test_unknown_intents_are_404(http: httpx.AsyncClient) -> None:
    for response in (
        await http.get("/v1/payment_intents/pi_nope"),
        await http.post("/v1/payment_intents/pi_nope/capture"),
        await http.post("/v1/refunds", json={"payment_intent": "pi_nope"}),
    ):
        assert response.status_code == 404
        assert error_of(response)["code"] == "resource_missing"


async def test_listing_filters_by_metadata_in_creation_order_and_pages(
    http: httpx.AsyncClient,
) -> None:
    order_a, order_b = new_order()["order_id"], new_order()["order_id"]
    ids = []
    for order_id, operation_id in ((order_a, "op1"), (order_b, "op2"), (order_a, "op3")):
        body = authorization({"order_id": order_id, "operation_id": operation_id})
        ids.append((await http.post("/v1/payment_intents", json=body)).json()["id"])

    assert [i["id"] for i in await listed(http, order_id=order_a)] == [ids[0], ids[2]]
    both = await listed(http, order_id=order_a, operation_id="op3")
    assert [i["id"] for i in both] == [ids[2]]
    assert await listed(http, order_id=order_a, operation_id="op2") == []

    first = (await http.get("/v1/payment_intents", params={"limit": "1", **_meta(order_a)})).json()
    assert ([i["id"] for i in first["data"]], first["has_more"]) == ([ids[0]], True)
    params = {"limit": "1", "starting_after": ids[0], **_meta(order_a)}
    second = (await http.get("/v1/payment_intents", params=params)).json()
    assert ([i["id"] for i in second["data"]], second["has_more"]) == ([ids[2]], False)


def _meta(order_id: str) -> dict[str, str]:
    return {"metadata[order_id]": order_id}


# --- idempotency -------------------------------------------------------------------------


async def test_a_replayed_key_returns_the_first_response(http: httpx.AsyncClient) -> None:
    order = new_order()
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    same_body_reordered = dict(reversed(list(authorization(order).items())))
    replay = await http.post("/v1/payment_intents", json=same_body_reordered, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert len(await listed(http, order_id=order["order_id"])) == 1

    other = await http.post(
        "/v1/payment_intents", json=authorization(order, amount=1), headers=headers
    )
    assert other.status_code == 400
    assert error_of(other)["type"] == "idempotency_error"
    elsewhere = await http.post(f"/v1/payment_intents/{first.json()['id']}/cancel", headers=headers)
    assert error_of(elsewhere)["type"] == "idempotency_error"
    assert len(await listed(http, order_id=order["order_id"])) == 1


async def test_a_replayed_decline_is_the_same_decline(http: httpx.AsyncClient) -> None:
    order = new_order()
    body = authorization(order, method="pm_card_chargeDeclined")
    headers = {"Idempotency-Key": new_key()}
    first = await http.post("/v1/payment_intents", json=body, headers=headers)
    replay = await http.post("/v1/payment_intents", json=body, headers=headers)
    assert first.status_code == replay.status_code == 402
    assert replay.content == first.content
    assert len(await listed(http, order_id=order["order_id"])) == 1


async def test_twenty_overlapping_posts_with_one_key_apply_once_and_the_rest_get_409(
    http: httpx.AsyncClient,
) -> None:
    # The latency keeps the first in flight while the other nineteen arrive: as a real PSP,
    # the simulator refuses them (409, nothing applied) rather than queueing them.
    await http.put("/admin/faults", json={"latency_ms": 1000})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    responses = await asyncio.gather(
        *(
            http.post("/v1/payment_intents", json=authorization(order), headers=headers)
            for _ in range(20)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 19
    refused = [error_of(r) for r in responses if r.status_code == 409]
    assert {(e["type"], e["code"]) for e in refused} == {
        ("idempotency_error", "idempotency_key_in_use")
    }
    [applied] = [r for r in responses if r.status_code == 200]
    assert len(await listed(http, order_id=order["order_id"])) == 1

    retried = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert retried.headers["Idempotent-Replayed"] == "true"  # once the first is done: its answer
    assert retried.json()["id"] == applied.json()["id"]


async def test_requests_under_other_keys_are_not_held_up_by_a_key_in_flight(
    http: httpx.AsyncClient,
) -> None:
    await http.put("/admin/faults", json={"latency_ms": 300})
    orders = [new_order() for _ in range(3)]
    responses = await asyncio.gather(
        *(
            http.post(
                "/v1/payment_intents",
                json=authorization(order),
                headers={"Idempotency-Key": new_key()},
            )
            for order in orders
        )
    )
    assert [r.status_code for r in responses] == [200, 200, 200]


async def test_intents_and_keys_survive_a_restart(tmp_path: Path) -> None:
    simulator = PspProcess(tmp_path / "data", tmp_path / "psp.log")
    await simulator.start()
    try:
        order = new_order()
        headers = {"Idempotency-Key": new_key()}
        async with httpx.AsyncClient(base_url=simulator.url, timeout=WITHIN) as http:
            body = authorization(order)
            first = await http.post("/v1/payment_intents", json=body, headers=headers)
            intent_id = first.json()["id"]
            await http.post(f"/v1/payment_intents/{intent_id}/capture", json={})
        assert await simulator.stop() == 0  # a graceful stop on SIGTERM

        await simulator.start()
        async with httpx.AsyncClient(base_url=simulator.url, timeout=WITHIN) as http:
            [kept] = await listed(http, order_id=order["order_id"])
            assert (kept["id"], kept["status"], kept["amount_received"]) == (
                intent_id,
                "succeeded",
                5000,
            )
            replay = await http.post("/v1/payment_intents", json=body, headers=headers)
            assert replay.headers["Idempotent-Replayed"] == "true"
            assert replay.content == first.content
    finally:
        await simulator.stop()


# --- faults ------------------------------------------------------------------------------


async def test_faults_are_read_and_replaced_whole(http: httpx.AsyncClient) -> None:
    await http.put("/admin/faults", json={"error_rate": 0.5, "hang_seconds": 2})
    put = await http.put("/admin/faults", json={"latency_ms": 5})
    assert put.status_code == 200
    assert (await http.get("/admin/faults")).json() == {
        "latency_ms": 5,
        "error_rate": 0.0,
        "hang_rate": 0.0,
        "hang_seconds": 30.0,
        "ambiguous_rate": 0.0,
        "response_delay_ms": 0,
        "conflict_rate": 0.0,
        "rate_limit_rate": 0.0,
        "rate_limit_seconds": 0.0,
        "retry_after_seconds": 1,
        "outage_seconds": 0.0,
        "outage_hang": False,
    }
    for bad in (
        {"error_rate": 1.5},
        {"latency_ms": -1},
        {"surprise": 1},
        {"conflict_rate": 2},
        {"outage_seconds": -1},
        {"retry_after_seconds": -1},
    ):
        assert (await http.put("/admin/faults", json=bad)).status_code == 400


async def test_an_injected_error_applies_nothing(http: httpx.AsyncClient, psp: RunningPsp) -> None:
    await http.put("/admin/faults", json={"error_rate": 1.0})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    failed = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert failed.status_code == 500
    assert error_of(failed)["type"] == "api_error"
    assert await listed(http, order_id=order["order_id"]) == []  # GETs are never faulted

    await http.put("/admin/faults", json={})
    retried = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers  # the failure was not stored
    assert _faulted(psp, headers["Idempotency-Key"]) == ["error"]


async def test_an_ambiguous_outcome_applies_but_loses_the_response(
    http: httpx.AsyncClient, psp: RunningPsp
) -> None:
    await http.put("/admin/faults", json={"ambiguous_rate": 1.0})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    with pytest.raises(httpx.TransportError):
        await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    [applied] = await listed(http, order_id=order["order_id"])
    assert applied["status"] == "requires_capture"

    await http.put("/admin/faults", json={})
    retried = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json()["id"] == applied["id"]
    assert len(await listed(http, order_id=order["order_id"])) == 1
    assert _faulted(psp, headers["Idempotency-Key"]) == ["ambiguous"]


async def test_a_delayed_response_comes_after_the_operation_applied(
    http: httpx.AsyncClient,
) -> None:
    await http.put("/admin/faults", json={"response_delay_ms": 1500})
    order = new_order()
    answer = asyncio.create_task(http.post("/v1/payment_intents", json=authorization(order)))
    try:
        await eventually(
            lambda: listed(http, order_id=order["order_id"]), what="the intent is listed"
        )
        assert not answer.done()
        [intent] = await listed(http, order_id=order["order_id"])
        response = await answer
    finally:
        answer.cancel()
    assert response.status_code == 200
    assert response.json()["id"] == intent["id"]


async def test_a_hang_outlasts_the_callers_deadline_and_applies_nothing(
    http: httpx.AsyncClient, psp: RunningPsp
) -> None:
    await http.put("/admin/faults", json={"hang_rate": 1.0, "hang_seconds": 2})
    order = new_order()
    key = new_key()
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        await http.post(
            "/v1/payment_intents",
            json=authorization(order),
            headers={"Idempotency-Key": key},
            timeout=1.0,
        )
    assert time.monotonic() - started < 1.9
    await eventually(
        lambda: _request_logged(psp, key), what="the simulator finished the hung request"
    )
    assert await listed(http, order_id=order["order_id"]) == []
    assert _faulted(psp, key) == ["hang"]


async def test_latency_delays_posts_but_not_gets(http: httpx.AsyncClient) -> None:
    await http.put("/admin/faults", json={"latency_ms": 300})
    started = time.monotonic()
    assert (await http.post("/v1/payment_intents", json=authorization(new_order()))).is_success
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (await http.get("/v1/payment_intents", params={"limit": "1"})).is_success
    assert time.monotonic() - started < 0.3


async def test_an_answer_held_back_past_the_clients_timeout_was_applied_and_replays(
    http: httpx.AsyncClient, psp: RunningPsp
) -> None:
    await http.put("/admin/faults", json={"response_delay_ms": 2000})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    with pytest.raises(httpx.TimeoutException):  # the client gives up first...
        await http.post(
            "/v1/payment_intents", json=authorization(order), headers=headers, timeout=0.5
        )
    [applied] = await listed(http, order_id=order["order_id"])  # ...on an applied operation
    assert applied["status"] == "requires_capture"

    retried = await http.post(  # during the delay: the key is free, its answer stored
        "/v1/payment_intents", json=authorization(order), headers=headers, timeout=5.0
    )
    assert retried.status_code == 200
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json()["id"] == applied["id"]


async def test_an_injected_conflict_is_a_409_that_applies_nothing(
    http: httpx.AsyncClient, psp: RunningPsp
) -> None:
    await http.put("/admin/faults", json={"conflict_rate": 1.0})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    refused = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert refused.status_code == 409
    assert (error_of(refused)["type"], error_of(refused)["code"]) == (
        "idempotency_error",
        "idempotency_key_in_use",
    )
    assert await listed(http, order_id=order["order_id"]) == []

    await http.put("/admin/faults", json={})
    retried = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers  # the refusal was not stored
    assert _faulted(psp, headers["Idempotency-Key"]) == ["conflict"]


async def test_rate_limiting_answers_429_with_retry_after_and_applies_nothing(
    http: httpx.AsyncClient,
) -> None:
    await http.put("/admin/faults", json={"rate_limit_rate": 1.0, "retry_after_seconds": 3})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    limited = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert (error_of(limited)["type"], error_of(limited)["code"]) == (
        "invalid_request_error",
        "rate_limit",
    )
    assert await listed(http, order_id=order["order_id"]) == []
    await http.put("/admin/faults", json={"rate_limit_rate": 1.0, "retry_after_seconds": 0})
    bare = await http.post("/v1/payment_intents", json=authorization(new_order()))
    assert (bare.status_code, "Retry-After" in bare.headers) == (429, False)

    await http.put("/admin/faults", json={})
    retried = await http.post("/v1/payment_intents", json=authorization(order), headers=headers)
    assert (retried.status_code, "Idempotent-Replayed" in retried.headers) == (200, False)


@pytest.mark.parametrize(
    ("window", "status", "code"),
    [("rate_limit_seconds", 429, "rate_limit"), ("outage_seconds", 503, "service_unavailable")],
)
async def test_a_burst_or_an_outage_refuses_every_post_then_ends_on_its_own(
    http: httpx.AsyncClient, window: str, status: int, code: str
) -> None:
    set_at = time.monotonic()
    await http.put("/admin/faults", json={window: 1.5})
    order = new_order()
    headers = {"Idempotency-Key": new_key()}
    answers: list[httpx.Response] = []

    async def accepted() -> bool:
        response = await http.post(
            "/v1/payment_intents", json=authorization(order), headers=headers
        )
        answers.append(response)
        if response.status_code != 200:
            assert await listed(http, order_id=order["order_id"]) == []  # nothing applied
        return response.status_code == 200

    await eventually(accepted, what=f"the {window} window ends")

    assert time.monotonic() - set_at >= 1.5
    refused = answers[:-1]
    assert refused, "the first POST came after the window"
    assert {(r.status_code, error_of(r)["code"]) for r in refused} == {(status, code)}
    assert len(await listed(http, order_id=order["order_id"])) == 1


async def test_an_outage_can_hold_posts_until_it_ends(http: httpx.AsyncClient) -> None:
    await http.put("/admin/faults", json={"outage_seconds": 1.5, "outage_hang": True})
    order = new_order()
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        await http.post("/v1/payment_intents", json=authorization(order), timeout=0.5)
    held = await http.post("/v1/payment_intents", json=authorization(order), timeout=WITHIN)
    assert held.status_code == 503  # answered when the outage ended, nothing applied
    assert time.monotonic() - started >= 1.4
    assert await listed(http, order_id=order["order_id"]) == []
    after = await http.post("/v1/payment_intents", json=authorization(order))
    assert after.status_code == 200


def _request_logged(psp: RunningPsp, key: str) -> bool:
    return any(r.get("idempotency_key") == key and "status" in r for r in psp.log_records())


def _faulted(psp: RunningPsp, key: str) -> list[str]:
    """The faults the request log line records for requests with this idempotency key."""
    return [
        r["fault"]
        for r in psp.log_records()
        if r.get("idempotency_key") == key and r.get("fault") is not None and "status" in r
    ]
