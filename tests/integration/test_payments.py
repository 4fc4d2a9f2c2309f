"""The payment service over real gRPC, a real PostgreSQL and the PSP simulator as a real
process: one authorization per order, amount rules, every PSP fault, a crash between the PSP's
success and our ledger write, reconciliation."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port
from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace.payment.v1 import payment_service_pb2_grpc as pb_grpc
from marketplace_platform import errors
from marketplace_platform.db import ping, unit_of_work_factory
from marketplace_platform.grpc_server import RunningServer, start_server
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from services.payment import bootstrap as payment
from services.payment.adapters import tables
from services.payment.adapters.psp import CircuitBreaker, HttpPsp
from services.payment.adapters.tables import payment_operations
from services.payment.adapters.unit_of_work import PaymentUnitOfWork
from services.payment.domain.payment import (
    Operation,
    OperationKind,
    OperationState,
    Payment,
    PaymentStatus,
)
from services.payment.service_layer import payments, reconciliation
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.ports import Approved, Intent
from tests.support.grpc_probes import SERVING, health_status
from tests.support.psp import RunningPsp
from tests.support.refusals import refusal
from tests.support.servers import ServiceServers

if TYPE_CHECKING:
    from marketplace.payment.v1.payment_service_pb2_grpc import PaymentServiceAsyncStub as Stub

REPO = Path(__file__).resolve().parents[2]
WITHIN = 30.0
STARTS_WITHIN = 90.0  # a cold interpreter start of the service on a busy 2-core machine


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture(autouse=True)
async def no_faults(psp: RunningPsp) -> AsyncIterator[None]:
    await psp.set_faults()
    yield
    await psp.set_faults()


def payment_settings(psp: RunningPsp, **overrides: Any) -> payment.PaymentSettings:
    values: dict[str, Any] = {
        "psp_url": psp.url,
        "psp_timeout_seconds": 1.0,
        "psp_attempts": 3,
        "psp_breaker_failures": 1000,
        "grpc_port": 0,
    }
    return payment.PaymentSettings(**(values | overrides))


@pytest.fixture
async def direct(engine: AsyncEngine, psp: RunningPsp) -> AsyncIterator[PaymentDeps]:
    """The use cases wired directly, as the reconciliation worker runs them."""
    adapter = HttpPsp(psp.url, timeout=5, breaker=CircuitBreaker())
    yield PaymentDeps(
        unit_of_work=unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="payment"), kind=PaymentUnitOfWork
        ),
        psp=adapter,
    )
    await adapter.close()


@pytest.fixture(scope="module")
async def payment_server(grpc_servers: ServiceServers, psp: RunningPsp) -> RunningServer:
    settings = payment_settings(psp)
    return await grpc_servers.start(settings, payment.build(settings))


@pytest.fixture
async def stub(payment_server: RunningServer) -> AsyncIterator[Stub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{payment_server.port}")
    yield pb_grpc.PaymentServiceStub(channel)
    await channel.close()


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


def authorize_request(
    order_id: str, amount: int = 2500, method: str = "pm_card_visa", currency: str = "USD"
) -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        idempotency_key=f"authorize-{order_id}",
        order_id=ids_pb2.OrderId(value=order_id),
        customer_id=ids_pb2.CustomerId(value="customer-1"),
        amount=money_pb2.Money(amount_minor=amount, currency=currency),
        payment_method=method,
    )


async def ledger_operations(engine: AsyncEngine, payment_id: str, kind: str) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(payment_operations)
                    .where(
                        payment_operations.c.payment_id == uuid.UUID(payment_id),
                        payment_operations.c.kind == kind,
                    )
                )
            ).scalar_one()
        )


async def test_50_concurrent_identical_authorizations_make_one_intent_and_one_ledger_entry(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())

    responses = await asyncio.gather(
        *(stub.AuthorizePayment(authorize_request(order), timeout=WITHIN) for _ in range(50))
    )

    assert {r.payment.status for r in responses} == {pb.PAYMENT_STATUS_AUTHORIZED}
    assert len({r.payment.payment_id.value for r in responses}) == 1
    intents = await psp.intents(order_id=order)
    assert [(i["status"], i["amount"]) for i in intents] == [("requires_capture", 2500)]
    payment_id = responses[0].payment.payment_id.value
    assert await ledger_operations(engine, payment_id, "AUTHORIZE") == 1


async def test_a_declined_card_fails_the_payment_without_an_error(stub: Stub) -> None:
    order = str(new_id())
    response = await stub.AuthorizePayment(
        authorize_request(order, method="pm_card_chargeDeclined")
    )
    assert response.payment.status == pb.PAYMENT_STATUS_FAILED
    assert response.payment.failure_code == "generic_decline"


async def test_a_different_authorization_for_the_same_order_is_refused(stub: Stub) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order, amount=1000))
    error = await refusal(stub.AuthorizePayment(authorize_request(order, amount=2000)))
    assert error.reason == "PAYMENT_MISMATCH"


async def test_capture_void_and_refund_keep_to_the_amounts_and_repeat_safely(
    stub: Stub, psp: RunningPsp
) -> None:
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.AuthorizePayment(authorize_request(order.value, amount=5000))

    too_much = await refusal(
        stub.CapturePayment(
            pb.CapturePaymentRequest(
                idempotency_key="capture-too-much", order_id=order, amount=usd(5001)
            )
        )
    )
    capture = pb.CapturePaymentRequest(
        idempotency_key="capture-1-key", order_id=order, amount=usd(5000)
    )
    captured = await stub.CapturePayment(capture)
    again = await stub.CapturePayment(capture)
    void_after_capture = await refusal(
        stub.VoidPayment(
            pb.VoidPaymentRequest(
                idempotency_key="void-1-key", order_id=order, reason=pb.VOID_REASON_ORDER_FAILED
            )
        )
    )
    refund = pb.RefundPaymentRequest(
        idempotency_key="refund-1-key",
        order_id=order,
        amount=usd(2000),
        reason=pb.REFUND_REASON_REQUESTED_BY_CUSTOMER,
    )
    refunded = await stub.RefundPayment(refund)
    await stub.RefundPayment(refund)
    over_refund = await refusal(
        stub.RefundPayment(
            pb.RefundPaymentRequest(
                idempotency_key="refund-2-key",
                order_id=order,
                amount=usd(3001),
                reason=pb.REFUND_REASON_REQUESTED_BY_CUSTOMER,
            )
        )
    )

    assert too_much.reason == "AMOUNT_EXCEEDED"
    assert captured.payment.status == again.payment.status == pb.PAYMENT_STATUS_CAPTURED
    assert captured.payment.captured.amount_minor == 5000
    assert void_after_capture.reason == "PAYMENT_STATE"
    assert refunded.payment.status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert refunded.payment.refunded.amount_minor == 2000
    assert over_refund.reason == "AMOUNT_EXCEEDED"
    [intent] = await psp.intents(order_id=order.value)
    assert (intent["amount_received"], intent["amount_refunded"]) == (5000, 2000)


async def test_void_before_capture_cancels_the_authorization(stub: Stub, psp: RunningPsp) -> None:
    order = ids_pb2.OrderId(value=str(new_id()))
    await stub.AuthorizePayment(authorize_request(order.value))
    void = pb.VoidPaymentRequest(
        idempotency_key="void-2-key", order_id=order, reason=pb.VOID_REASON_ORDER_FAILED
    )
    voided = await stub.VoidPayment(void)
    again = await stub.VoidPayment(void)
    assert voided.payment.status == again.payment.status == pb.PAYMENT_STATUS_VOIDED
    [intent] = await psp.intents(order_id=order.value)
    assert intent["status"] == "canceled"


@pytest.mark.parametrize(
    ("case", "request_args", "bad_field"),
    [
        ("zero amount", {"amount": 0}, "amount"),
        ("negative amount", {"amount": -5}, "amount.amount_minor"),
        ("unknown currency", {"currency": "XYZ"}, "amount.currency"),
        ("lowercase currency", {"currency": "usd"}, "amount.currency"),
        ("missing payment method", {"method": ""}, "payment_method"),
    ],
)
async def test_bad_input_is_refused_before_any_psp_call(
    stub: Stub, psp: RunningPsp, case: str, request_args: dict[str, Any], bad_field: str
) -> None:
    order = str(new_id())
    error = await refusal(stub.AuthorizePayment(authorize_request(order, **request_args)))
    assert isinstance(error, errors.InvalidArgument), case
    assert bad_field in {v.field for v in error.violations}, error.violations
    assert await psp.intents(order_id=order) == []


async def test_latency_below_the_timeout_still_authorizes_once(stub: Stub, psp: RunningPsp) -> None:
    await psp.set_faults(latency_ms=300)
    order = str(new_id())
    response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1


async def test_an_ambiguous_outcome_is_resolved_by_asking_the_psp(
    stub: Stub, psp: RunningPsp
) -> None:
    await psp.set_faults(ambiguous_rate=1.0)
    order = str(new_id())
    response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1
    assert response.payment.psp_reference == (await psp.intents(order_id=order))[0]["id"]


@pytest.mark.parametrize("fault", [{"error_rate": 1.0}, {"hang_rate": 1.0, "hang_seconds": 3}])
async def test_a_failing_psp_gives_unavailable_then_one_intent_once_it_recovers(
    stub: Stub, psp: RunningPsp, fault: dict[str, float]
) -> None:
    await psp.set_faults(**fault)
    order = str(new_id())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await psp.intents(order_id=order) == []

    await psp.set_faults()
    response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)

    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1
    states = [(o.kind, o.state) for o in response.payment.operations]
    assert states == [(pb.PAYMENT_OPERATION_KIND_AUTHORIZE, pb.PAYMENT_OPERATION_STATE_SUCCEEDED)]


async def test_an_open_circuit_answers_unavailable_without_calling_the_psp(
    engine: AsyncEngine, psp: RunningPsp
) -> None:
    settings = payment_settings(
        psp, psp_breaker_failures=2, psp_breaker_open_seconds=60, psp_attempts=1
    )
    parts = payment.build(settings)(engine)
    running = await start_server(settings, parts.services, lambda: ping(engine))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            breaker_stub: Stub = pb_grpc.PaymentServiceStub(channel)
            await psp.set_faults(error_rate=1.0)
            for _ in range(2):
                await refusal(breaker_stub.AuthorizePayment(authorize_request(str(new_id()))))
            await psp.set_faults()  # the PSP is healthy again, but the circuit is open
            order = str(new_id())
            error = await refusal(breaker_stub.AuthorizePayment(authorize_request(order)))
    finally:
        await running.stop(1)
    assert error.reason == "PSP_UNAVAILABLE"
    assert await psp.intents(order_id=order) == []


async def test_a_crash_between_the_psp_success_and_the_ledger_write_is_reconciled(
    psp: RunningPsp, migrated_database_url: str, direct: PaymentDeps
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "PSP_URL": psp.url,
        "GRPC_PORT": str(port),
        "PSP_TIMEOUT_SECONDS": "10",
        "MIGRATE_ON_START": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.payment",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    order = str(new_id())
    try:
        async with asyncio.timeout(STARTS_WITHIN):
            while True:
                try:
                    if await health_status(f"127.0.0.1:{port}") == SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        # The PSP applies the authorization, then holds its answer back for a while.
        await psp.set_faults(response_delay_ms=5000)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = asyncio.ensure_future(
                pb_grpc.PaymentServiceStub(channel).AuthorizePayment(
                    authorize_request(order), timeout=WITHIN
                )
            )
            async with asyncio.timeout(WITHIN):
                while True:  # until the PSP has applied it
                    if await psp.intents(order_id=order):
                        break
                    await asyncio.sleep(0.05)
            process.send_signal(signal.SIGKILL)  # the PSP succeeded; our ledger never heard
            await process.wait()
            with pytest.raises(grpc.aio.AioRpcError):
                await call
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await psp.set_faults()
    before, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert before.status is PaymentStatus.PENDING

    report = await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0)), direct
    )

    after, operations = await payments.get_payment(uuid.UUID(order), direct)
    [intent] = await psp.intents(order_id=order)
    assert order in {str(p.order_id) for _, p, _ in report.resolved}
    assert after.status is PaymentStatus.AUTHORIZED
    assert (after.psp_intent_id, after.authorized) == (intent["id"], intent["amount"])
    assert intent["status"] == "requires_capture"
    assert [(o.kind.value, o.state.value) for o in operations] == [("AUTHORIZE", "SUCCEEDED")]


async def test_reconciliation_voids_an_authorization_the_ledger_does_not_know(
    psp: RunningPsp, direct: PaymentDeps
) -> None:
    order = str(new_id())
    created = await psp.http.post(
        "/v1/payment_intents",
        json={
            "amount": 700,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "metadata": {"order_id": order},
        },
        headers={"Idempotency-Key": f"stray-{order}"},
    )
    created.raise_for_status()

    dry = await reconciliation.reconcile(
        reconciliation.Reconcile(orphan_after=timedelta(0), dry_run=True), direct
    )
    assert (await psp.intents(order_id=order))[0]["status"] == "requires_capture"
    report = await reconciliation.reconcile(
        reconciliation.Reconcile(orphan_after=timedelta(0)), direct
    )

    assert order in {i.metadata.get("order_id") for i, _, voided in dry.orphans if not voided}
    assert order in {i.metadata.get("order_id") for i, _, voided in report.orphans if voided}
    assert (await psp.intents(order_id=order))[0]["status"] == "canceled"


async def test_reconciliation_flags_authorizations_near_their_capture_deadline(
    stub: Stub,
) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order))
    request = pb.ReconcilePaymentsRequest(
        idempotency_key=f"reconcile-{order}",
        capture_warning_window=duration_pb2.Duration(seconds=8 * 86400),  # PSP allows 7 days
        dry_run=True,
    )

    report = (await stub.ReconcilePayments(request, timeout=WITHIN)).report

    assert order in {d.order_id.value for d in report.capture_deadlines}
    assert report.dry_run


def order_ref(order_id: str) -> ids_pb2.OrderId:
    return ids_pb2.OrderId(value=order_id)


def void_request(order_id: str, key: str) -> pb.VoidPaymentRequest:
    return pb.VoidPaymentRequest(
        idempotency_key=key,
        order_id=ids_pb2.OrderId(value=order_id),
        reason=pb.VOID_REASON_ORDER_FAILED,
    )


async def test_voiding_an_order_with_no_payment_succeeds_without_effect(stub: Stub) -> None:
    order = str(new_id())

    voided = await stub.VoidPayment(void_request(order, f"void-none-{order}"))

    assert not voided.HasField("payment")  # the contract's answer for "no payment"
    missing = await refusal(stub.GetPayment(pb.GetPaymentRequest(order_id=order_ref(order))))
    assert isinstance(missing, errors.NotFound)  # the void created nothing


async def test_voiding_a_declined_payment_succeeds_without_effect(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    declined = await stub.AuthorizePayment(
        authorize_request(order, method="pm_card_chargeDeclined")
    )

    voids = [await stub.VoidPayment(void_request(order, f"void-{i}-{order}")) for i in range(2)]

    assert [v.payment.status for v in voids] == [pb.PAYMENT_STATUS_FAILED] * 2
    assert voids[0].payment.failure_code == "generic_decline"
    payment_id = declined.payment.payment_id.value
    assert await ledger_operations(engine, payment_id, "VOID") == 0
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["requires_payment_method"]


async def test_voiding_a_voided_payment_again_under_another_key_succeeds_without_effect(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    authorized = await stub.AuthorizePayment(authorize_request(order))
    first = await stub.VoidPayment(void_request(order, f"void-saga-{order}"))

    again = await stub.VoidPayment(void_request(order, f"void-operator-{order}"))

    assert first.payment.status == again.payment.status == pb.PAYMENT_STATUS_VOIDED
    assert await ledger_operations(engine, authorized.payment.payment_id.value, "VOID") == 1
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]


async def test_voiding_a_captured_payment_is_failed_precondition(
    stub: Stub, psp: RunningPsp
) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order))
    await stub.CapturePayment(
        pb.CapturePaymentRequest(
            idempotency_key=f"capture-{order}", order_id=order_ref(order), amount=usd(2500)
        )
    )

    error = await refusal(stub.VoidPayment(void_request(order, f"void-{order}")))

    assert isinstance(error, errors.FailedPrecondition)
    assert (error.reason, error.metadata["status"]) == ("PAYMENT_STATE", "CAPTURED")
    [intent] = await psp.intents(order_id=order)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 2500)


async def test_voiding_a_payment_whose_authorization_is_unknown_is_refused_not_skipped(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    await psp.set_faults(error_rate=1.0)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    await psp.set_faults()

    error = await refusal(stub.VoidPayment(void_request(order, f"void-{order}")))
    read = await stub.GetPayment(pb.GetPaymentRequest(order_id=order_ref(order)))

    assert isinstance(error, errors.FailedPrecondition)
    assert (error.reason, error.metadata["status"]) == ("PAYMENT_STATE", "PENDING")
    assert read.payment.status == pb.PAYMENT_STATUS_PENDING
    assert await ledger_operations(engine, read.payment.payment_id.value, "VOID") == 0


# --- ReleaseOrderPayment: a cancelled order keeps no hold -----------------------------------


def release_request(order_id: str, key: str | None = None) -> pb.ReleaseOrderPaymentRequest:
    return pb.ReleaseOrderPaymentRequest(
        idempotency_key=key or f"release-{order_id}", order_id=order_ref(order_id)
    )


def capture_request(order_id: str, amount: int = 2500) -> pb.CapturePaymentRequest:
    return pb.CapturePaymentRequest(
        idempotency_key=f"{order_id}:capture", order_id=order_ref(order_id), amount=usd(amount)
    )


async def test_releasing_an_authorized_payment_voids_it_once_and_a_repeat_is_harmless(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    authorized = await stub.AuthorizePayment(authorize_request(order))

    first = await stub.ReleaseOrderPayment(release_request(order), timeout=WITHIN)
    again = await stub.ReleaseOrderPayment(release_request(order, f"other-{order}"))

    assert (first.settled, again.settled) == (True, True)
    assert first.payment.status == again.payment.status == pb.PAYMENT_STATUS_VOIDED
    assert await ledger_operations(engine, authorized.payment.payment_id.value, "VOID") == 1
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]


async def test_releasing_a_captured_payment_refunds_what_is_left(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order, amount=5000))
    await stub.CapturePayment(capture_request(order, 5000))
    await stub.RefundPayment(
        pb.RefundPaymentRequest(
            idempotency_key=f"goodwill-{order}",
            order_id=order_ref(order),
            amount=usd(1000),
            reason=pb.REFUND_REASON_REQUESTED_BY_CUSTOMER,
        )
    )

    released = await stub.ReleaseOrderPayment(release_request(order), timeout=WITHIN)
    again = await stub.ReleaseOrderPayment(release_request(order))

    assert released.settled
    assert again.settled
    assert released.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert released.payment.refunded.amount_minor == 5000
    payment_id = released.payment.payment_id.value
    assert await ledger_operations(engine, payment_id, "REFUND") == 2  # goodwill + release
    [intent] = await psp.intents(order_id=order)
    assert (intent["amount_received"], intent["amount_refunded"]) == (5000, 5000)


async def test_a_release_before_any_payment_refuses_the_authorization_that_comes_later(
    stub: Stub, psp: RunningPsp
) -> None:
    order = str(new_id())

    released = await stub.ReleaseOrderPayment(release_request(order))
    error = await refusal(stub.AuthorizePayment(authorize_request(order)))
    again = await stub.ReleaseOrderPayment(release_request(order))

    assert released.settled
    assert not released.HasField("payment")
    assert isinstance(error, errors.FailedPrecondition)
    assert (error.reason, error.metadata["order_id"]) == ("ORDER_CANCELLED", order)
    assert again.settled
    assert not again.HasField("payment")
    assert await psp.intents(order_id=order) == []


async def test_a_declined_payment_is_released_without_a_psp_call(
    stub: Stub, engine: AsyncEngine
) -> None:
    order = str(new_id())
    declined = await stub.AuthorizePayment(
        authorize_request(order, method="pm_card_chargeDeclined")
    )

    released = await stub.ReleaseOrderPayment(release_request(order))

    assert released.settled
    assert released.payment.status == pb.PAYMENT_STATUS_FAILED
    payment_id = declined.payment.payment_id.value
    assert await ledger_operations(engine, payment_id, "VOID") == 0


async def test_an_authorization_in_flight_at_the_release_is_voided_by_reconciliation(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps
) -> None:
    order = str(new_id())
    await psp.set_faults(latency_ms=700)  # below the service's 1 s PSP timeout
    authorizing = asyncio.ensure_future(
        stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    )
    try:
        async with asyncio.timeout(WITHIN):
            while True:  # the payment is recorded PENDING before the PSP is called
                try:
                    await payments.get_payment(uuid.UUID(order), direct)
                    break
                except errors.NotFound:
                    await asyncio.sleep(0.02)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReleaseOrderPayment(release_request(order))
        authorized = await authorizing
    finally:
        authorizing.cancel()
    await psp.set_faults()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert authorized.payment.status == pb.PAYMENT_STATUS_AUTHORIZED  # landed after the release

    report = await reconciliation.reconcile(reconciliation.Reconcile(), direct)

    assert order in {str(p.order_id) for p, _ in report.released}
    after, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert after.status is PaymentStatus.VOIDED
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]
    settled = await stub.ReleaseOrderPayment(release_request(order))
    assert settled.settled
    assert settled.payment.status == pb.PAYMENT_STATUS_VOIDED


@pytest.mark.parametrize("how", ["release", "void"])
async def test_a_capture_after_a_void_is_refused(stub: Stub, psp: RunningPsp, how: str) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order))
    if how == "release":
        await stub.ReleaseOrderPayment(release_request(order))
    else:
        await stub.VoidPayment(void_request(order, f"void-{order}"))

    error = await refusal(stub.CapturePayment(capture_request(order)))

    assert isinstance(error, errors.FailedPrecondition)
    [intent] = await psp.intents(order_id=order)
    assert (intent["status"], intent["amount_received"]) == ("canceled", 0)


async def test_a_release_with_a_bad_key_is_invalid(stub: Stub) -> None:
    error = await refusal(stub.ReleaseOrderPayment(release_request(str(new_id()), "short")))
    assert isinstance(error, errors.InvalidArgument)
    assert "idempotency_key" in {v.field for v in error.violations}


# --- PSP answers that mean "not applied, try again" ------------------------------------------


async def operation_states(engine: AsyncEngine, order_id: str) -> list[tuple[str, str, str]]:
    """(kind, state, failure code) of every ledger operation of the order's payment."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(
                payment_operations.c.kind,
                payment_operations.c.state,
                payment_operations.c.failure_code,
            )
            .join(tables.payments, tables.payments.c.payment_id == payment_operations.c.payment_id)
            .where(tables.payments.c.order_id == uuid.UUID(order_id))
            .order_by(payment_operations.c.created_at)
        )
        return [(kind, state, code or "") for kind, state, code in rows]


@pytest.mark.parametrize(
    "fault",
    [{"rate_limit_rate": 1.0, "retry_after_seconds": 0}, {"conflict_rate": 1.0}],
    ids=["429", "409-in-use"],
)
async def test_a_429_or_a_409_in_use_is_not_a_decline_and_a_retry_authorizes(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine, fault: dict[str, float]
) -> None:
    await psp.set_faults(**fault)
    order = str(new_id())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    read = await stub.GetPayment(pb.GetPaymentRequest(order_id=order_ref(order)))
    assert read.payment.status == pb.PAYMENT_STATUS_PENDING  # no decline in the ledger
    assert [state for _, state, _ in await operation_states(engine, order)] == ["PENDING"]

    await psp.set_faults()
    response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)

    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1


async def test_a_429_burst_is_waited_out_as_retry_after_says(stub: Stub, psp: RunningPsp) -> None:
    # Without honouring Retry-After the service's three tries (jittered 0.2 s, 0.4 s) would all
    # fall inside the burst.
    await psp.set_faults(rate_limit_seconds=0.8, retry_after_seconds=1)
    order = str(new_id())
    started = asyncio.get_running_loop().time()

    response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)

    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert asyncio.get_running_loop().time() - started >= 1.0
    assert len(await psp.intents(order_id=order)) == 1


async def test_two_payment_processes_driving_one_authorization_at_once_both_authorize(
    engine: AsyncEngine, psp: RunningPsp, direct: PaymentDeps
) -> None:
    # Two instances of the service (e.g. a saga retry landing on another one) send the same
    # operation under one key at once: the PSP answers the second 409 while the first runs.
    other_psp = HttpPsp(psp.url, timeout=5, breaker=CircuitBreaker())
    other = PaymentDeps(
        unit_of_work=unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="payment"), kind=PaymentUnitOfWork
        ),
        psp=other_psp,
        attempts=8,  # jittered waits that cannot all fall inside the first one's 300 ms
    )
    await psp.set_faults(latency_ms=300)
    order = uuid.UUID(str(new_id()))
    command = payments.Authorize(
        order_id=order,
        customer_id="customer-1",
        amount=2500,
        currency="USD",
        payment_method="pm_card_visa",
    )
    try:
        results = await asyncio.gather(
            payments.authorize(command, replace(direct, attempts=8)),
            payments.authorize(command, other),
        )
    finally:
        await other_psp.close()

    assert {r.status for r in results} == {PaymentStatus.AUTHORIZED}
    assert len(await psp.intents(order_id=str(order))) == 1


async def test_an_outage_longer_than_the_callers_tries_gives_unavailable_then_one_intent(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    await psp.set_faults(outage_seconds=3)
    order = str(new_id())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [state for _, state, _ in await operation_states(engine, order)] == ["UNKNOWN"]

    codes = []
    async with asyncio.timeout(WITHIN):  # the outage ends on its own; the owner keeps trying
        while True:
            try:
                response = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
                break
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
                await asyncio.sleep(0.2)

    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}
    assert response.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1


async def test_an_answer_later_than_the_timeout_is_resolved_by_asking_the_psp(
    stub: Stub, psp: RunningPsp
) -> None:
    order = str(new_id())
    await psp.set_faults(response_delay_ms=2500)  # applied, answered after the 1 s timeout
    authorized = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    captured = await stub.CapturePayment(capture_request(order), timeout=WITHIN)

    assert authorized.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert captured.payment.status == pb.PAYMENT_STATUS_CAPTURED
    [intent] = await psp.intents(order_id=order)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 2500)


# --- what an intent found by lookup says about an authorization ------------------------------


async def lost_authorization(
    psp: RunningPsp, direct: PaymentDeps, order: str, method: str = "pm_card_visa"
) -> None:
    """An authorization the PSP applied whose answer was lost: left UNKNOWN in the ledger."""
    await psp.set_faults(ambiguous_rate=1.0)
    command = payments.Authorize(
        order_id=uuid.UUID(order),
        customer_id="customer-1",
        amount=2500,
        currency="USD",
        payment_method=method,
    )
    with pytest.raises(errors.DependencyUnavailable):
        await payments.authorize(command, replace(direct, attempts=1))
    await psp.set_faults()


async def unapplied_authorization(psp: RunningPsp, direct: PaymentDeps, order: str) -> None:
    """An authorization the PSP refused without applying (a 500): UNKNOWN in the ledger."""
    await psp.set_faults(error_rate=1.0)
    with pytest.raises(errors.DependencyUnavailable):
        await payments.authorize(
            payments.Authorize(
                order_id=uuid.UUID(order),
                customer_id="customer-1",
                amount=2500,
                currency="USD",
                payment_method="pm_card_visa",
            ),
            replace(direct, attempts=1),
        )
    await psp.set_faults()


async def retry_authorization(direct: PaymentDeps, order: str, method: str) -> None:
    command = payments.Authorize(
        order_id=uuid.UUID(order),
        customer_id="customer-1",
        amount=2500,
        currency="USD",
        payment_method=method,
    )
    await payments.authorize(command, direct)


@pytest.mark.parametrize("resolver", ["owner", "reconciliation"])
async def test_an_authorization_voided_at_the_psp_is_not_read_as_authorized(
    psp: RunningPsp, direct: PaymentDeps, resolver: str
) -> None:
    order = str(new_id())
    await lost_authorization(psp, direct, order)
    [intent] = await psp.intents(order_id=order)
    voided = await psp.http.post(
        f"/v1/payment_intents/{intent['id']}/cancel", headers={"Idempotency-Key": f"x-{order}"}
    )
    assert voided.status_code == 200

    if resolver == "owner":
        await retry_authorization(direct, order, "pm_card_visa")
    else:
        await reconciliation.reconcile(
            reconciliation.Reconcile(in_flight_grace=timedelta(0)), direct
        )

    after, operations = await payments.get_payment(uuid.UUID(order), direct)
    assert (after.status, after.failure_code, after.authorized) == (
        PaymentStatus.FAILED,
        "canceled",
        0,
    )
    assert [(o.kind.value, o.state.value) for o in operations] == [("AUTHORIZE", "FAILED")]


async def test_a_decline_found_by_lookup_keeps_the_psps_decline_code(
    psp: RunningPsp, direct: PaymentDeps
) -> None:
    order = str(new_id())
    await lost_authorization(psp, direct, order, method="pm_card_chargeDeclined")

    await retry_authorization(direct, order, "pm_card_chargeDeclined")

    after, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert (after.status, after.failure_code) == (PaymentStatus.FAILED, "generic_decline")


class UndecidedPsp(HttpPsp):
    """The real adapter, except that every intent it finds is still `processing`."""

    async def find(self, **metadata: str) -> list[Intent]:
        return [replace(intent, status="processing") for intent in await super().find(**metadata)]


async def test_an_intent_still_processing_is_left_open_not_settled(
    engine: AsyncEngine, psp: RunningPsp, direct: PaymentDeps
) -> None:
    order = str(new_id())
    await lost_authorization(psp, direct, order)
    undecided = UndecidedPsp(psp.url, timeout=5, breaker=CircuitBreaker())
    try:
        report = await reconciliation.reconcile(
            reconciliation.Reconcile(in_flight_grace=timedelta(0)), replace(direct, psp=undecided)
        )
    finally:
        await undecided.close()

    assert order not in {str(p.order_id) for _, p, _ in report.resolved}
    assert [state for _, state, _ in await operation_states(engine, order)] == ["UNKNOWN"]
    await retry_authorization(direct, order, "pm_card_visa")  # once decided, it settles
    after, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert after.status is PaymentStatus.AUTHORIZED


# --- reconciliation never races an operation's owner ----------------------------------------


async def test_an_owner_retrying_a_lost_authorization_is_not_overtaken_by_reconciliation(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps, engine: AsyncEngine
) -> None:
    # The saga's first AuthorizePayment loses every answer (nothing applied); reconciliation
    # runs before the saga's retry: within the owner horizon it must leave the operation open.
    order = str(new_id())
    await psp.set_faults(error_rate=1.0)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    await psp.set_faults()

    report = await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0)), direct
    )
    retried = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)

    assert order not in {str(p.order_id) for _, p, _ in report.resolved}
    assert retried.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert len(await psp.intents(order_id=order)) == 1
    assert await operation_states(engine, order) == [("AUTHORIZE", "SUCCEEDED", "")]


async def test_an_authorization_resolved_not_applied_is_tried_again_by_its_owner(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps, engine: AsyncEngine
) -> None:
    # Past the owner horizon reconciliation settles it FAILED not_applied; an owner that still
    # retries (a late saga attempt, an operator) gets it tried again, not a decline.
    order = str(new_id())
    await psp.set_faults(error_rate=1.0)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)
    await psp.set_faults()
    report = await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0), owner_horizon=timedelta(0)), direct
    )
    assert order in {str(p.order_id) for _, p, _ in report.resolved}
    assert await operation_states(engine, order) == [("AUTHORIZE", "FAILED", "not_applied")]

    retried = await stub.AuthorizePayment(authorize_request(order), timeout=WITHIN)

    assert retried.payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert retried.payment.failure_code == ""
    assert len(await psp.intents(order_id=order)) == 1
    assert await operation_states(engine, order) == [("AUTHORIZE", "SUCCEEDED", "")]


@pytest.mark.parametrize("horizon", [None, timedelta(0)], ids=["within-horizon", "past-horizon"])
async def test_a_capture_that_failed_transiently_captures_on_a_later_call_with_its_key(
    stub: Stub,
    psp: RunningPsp,
    direct: PaymentDeps,
    engine: AsyncEngine,
    horizon: timedelta | None,
) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order))
    await psp.set_faults(error_rate=1.0)
    for _ in range(2):  # the shipping consumer's first receives
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CapturePayment(capture_request(order), timeout=WITHIN)
    await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0), owner_horizon=horizon), direct
    )
    await psp.set_faults()

    captured = await stub.CapturePayment(capture_request(order), timeout=WITHIN)

    assert captured.payment.status == pb.PAYMENT_STATUS_CAPTURED
    assert captured.payment.captured.amount_minor == 2500
    [intent] = await psp.intents(order_id=order)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 2500)
    assert await operation_states(engine, order) == [
        ("AUTHORIZE", "SUCCEEDED", ""),
        ("CAPTURE", "SUCCEEDED", ""),
    ]


async def test_a_capture_the_psp_refused_stays_refused_on_a_repeat(
    stub: Stub, psp: RunningPsp, engine: AsyncEngine
) -> None:
    order = str(new_id())
    authorized = await stub.AuthorizePayment(authorize_request(order))
    intent_id = authorized.payment.psp_reference
    voided = await psp.http.post(  # voided behind the ledger's back: a capture is refused
        f"/v1/payment_intents/{intent_id}/cancel", headers={"Idempotency-Key": f"x-{order}"}
    )
    assert voided.status_code == 200

    first = await stub.CapturePayment(capture_request(order), timeout=WITHIN)
    again = await stub.CapturePayment(capture_request(order), timeout=WITHIN)

    assert first.payment.captured.amount_minor == again.payment.captured.amount_minor == 0
    assert await operation_states(engine, order) == [
        ("AUTHORIZE", "SUCCEEDED", ""),
        ("CAPTURE", "FAILED", "payment_intent_unexpected_state"),
    ]


async def test_a_release_whose_void_was_never_applied_is_tried_again(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps, engine: AsyncEngine
) -> None:
    order = str(new_id())
    await stub.AuthorizePayment(authorize_request(order))
    await psp.set_faults(error_rate=1.0)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ReleaseOrderPayment(release_request(order), timeout=WITHIN)
    await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0), owner_horizon=timedelta(0)), direct
    )
    await psp.set_faults()

    released = await stub.ReleaseOrderPayment(release_request(order), timeout=WITHIN)

    assert released.settled
    assert released.payment.status == pb.PAYMENT_STATUS_VOIDED
    assert [i["status"] for i in await psp.intents(order_id=order)] == ["canceled"]
    assert await operation_states(engine, order) == [
        ("AUTHORIZE", "SUCCEEDED", ""),
        ("VOID", "SUCCEEDED", ""),
    ]


async def test_a_late_success_wins_over_a_not_applied_verdict(
    psp: RunningPsp, direct: PaymentDeps, engine: AsyncEngine
) -> None:
    # Even when reconciliation gives up on an operation (horizon 0 here) while the owner's
    # request is still on its way to the PSP, the PSP's later answer is what the ledger keeps.
    order = str(new_id())
    await psp.set_faults(latency_ms=1500)  # the PSP applies it only after 1.5 s
    command = payments.Authorize(
        order_id=uuid.UUID(order),
        customer_id="customer-1",
        amount=2500,
        currency="USD",
        payment_method="pm_card_visa",
    )
    authorizing = asyncio.ensure_future(payments.authorize(command, direct))
    try:
        async with asyncio.timeout(WITHIN):
            while True:  # recorded PENDING, its request on its way to the PSP
                if await operation_states(engine, order):
                    break
                await asyncio.sleep(0.02)
        await reconciliation.reconcile(
            reconciliation.Reconcile(in_flight_grace=timedelta(0), owner_horizon=timedelta(0)),
            direct,
        )
        assert await operation_states(engine, order) == [("AUTHORIZE", "FAILED", "not_applied")]
        authorized = await authorizing
    finally:
        authorizing.cancel()

    assert (authorized.status, authorized.failure_code) == (PaymentStatus.AUTHORIZED, None)
    assert await operation_states(engine, order) == [("AUTHORIZE", "SUCCEEDED", "")]
    assert len(await psp.intents(order_id=order)) == 1


@pytest.mark.parametrize("applied", [True, False])
async def test_a_release_settles_an_authorization_its_cancelled_owner_left_unknown(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps, applied: bool
) -> None:
    # The saga gave up on the authorization (the order was cancelled), leaving it UNKNOWN: no
    # owner will ever ask again, so the release itself asks the PSP instead of answering
    # UNAVAILABLE until the owner horizon passes (chaos runs saw releases stuck for minutes).
    order = str(new_id())
    if applied:
        await lost_authorization(psp, direct, order)  # applied, the answer lost
    else:
        await unapplied_authorization(psp, direct, order)
    before, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert before.status is PaymentStatus.PENDING

    released = await stub.ReleaseOrderPayment(release_request(order))

    assert released.settled
    intents = await psp.intents(order_id=order)
    if applied:
        assert released.payment.status == pb.PAYMENT_STATUS_VOIDED
        assert [i["status"] for i in intents] == ["canceled"]
    else:
        assert released.payment.status == pb.PAYMENT_STATUS_FAILED
        assert intents == []


async def test_reconciliation_settles_a_cancelled_orders_abandoned_authorization_at_once(
    stub: Stub, psp: RunningPsp, direct: PaymentDeps
) -> None:
    # A cancelled order's owner is gone, so its open authorization that the PSP never applied
    # does not wait out the owner horizon (15 minutes): the next pass settles it as failed.
    order = str(new_id())
    await unapplied_authorization(psp, direct, order)
    async with direct.unit_of_work() as uow:
        await uow.payments.mark_cancelled(uuid.UUID(order))

    await reconciliation.reconcile(reconciliation.Reconcile(in_flight_grace=timedelta(0)), direct)

    after, _ = await payments.get_payment(uuid.UUID(order), direct)
    assert after.status is PaymentStatus.FAILED
    assert await psp.intents(order_id=order) == []


async def blocked_by(engine: AsyncEngine, holder_pid: int) -> bool:
    """Whether some backend waits for a lock the backend `holder_pid` holds."""
    async with engine.connect() as connection:
        waiting = await connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": holder_pid},
        )
        return bool(waiting.scalar_one())


async def test_a_settlement_waits_for_the_payments_lock_first_and_reads_the_operation_as_left(
    direct: PaymentDeps, engine: AsyncEngine
) -> None:
    # The settlement locks the payment and the operation in one statement. It must take the
    # payment's lock first (every other locker does: no deadlock), and read the operation as
    # the lock's holder left it, even when the holder changed only the operation (as
    # mark_unknown does): a statement reads as of its start, before any wait, except the rows
    # it locks. Here the holder refuses the authorization; the PSP's late "approved" must not
    # be written over that refusal.
    order = new_id()
    fresh = Payment(
        new_id(), order, "customer-1", "USD", "pm_card_visa", 2500, PaymentStatus.PENDING
    )
    operation = Operation(
        new_id(),
        fresh.payment_id,
        OperationKind.AUTHORIZE,
        2500,
        OperationState.PENDING,
        "authorize",
    )
    async with direct.unit_of_work() as uow:
        assert await uow.payments.create(fresh, operation) is not None
    the_payment = tables.payments.c.payment_id == fresh.payment_id
    the_operation = payment_operations.c.operation_id == operation.operation_id

    async with engine.connect() as holder, holder.begin():
        await holder.execute(
            select(tables.payments.c.payment_id).where(the_payment).with_for_update()
        )
        holder_pid = (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        settling = asyncio.ensure_future(
            payments.settle(operation, Approved(intent=None, reference="pi_late"), direct)
        )
        try:
            async with asyncio.timeout(WITHIN):
                while True:  # until the settlement waits for the payment's lock
                    if await blocked_by(engine, holder_pid):
                        break
                    await asyncio.sleep(0.02)
            async with engine.connect() as other, other.begin():  # not held by the waiter
                await other.execute(
                    select(payment_operations.c.operation_id)
                    .where(the_operation)
                    .with_for_update(nowait=True)
                )
            await holder.execute(
                payment_operations.update()
                .where(the_operation)
                .values(state="FAILED", failure_code="card_declined")
            )
        except BaseException:
            settling.cancel()
            raise
    settled = await asyncio.wait_for(settling, WITHIN)

    assert settled.status is PaymentStatus.PENDING  # as the holder left it: not authorized
    assert await operation_states(engine, str(order)) == [("AUTHORIZE", "FAILED", "card_declined")]
    async with engine.connect() as connection:
        events = await connection.execute(
            select(func.count())
            .select_from(tables.outbox)
            .where(tables.outbox.c.aggregate_id == str(order))
        )
        assert events.scalar_one() == 0
