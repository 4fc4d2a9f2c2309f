"""Reconciliation with the PSP: resolve operations whose outcome we never learned, release what
payments of cancelled orders still hold, void authorizations our ledger does not stand behind,
and flag authorizations near their capture-before time. Runs on a schedule in the payment
service and on demand."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from marketplace.common.v1 import ids_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace_platform.errors import DomainError
from services.payment.domain import payment as rules
from services.payment.domain.payment import (
    NOT_APPLIED,
    Operation,
    OperationState,
    Payment,
    PaymentStatus,
)
from services.payment.service_layer import payments, release
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.events import money
from services.payment.service_layer.ports import Approved, Declined, Intent, PspUnavailable, Unknown

log = logging.getLogger(__name__)

DEFAULT_ORPHAN_AFTER = timedelta(minutes=30)
CAPTURE_WARNING_WINDOW = timedelta(days=1)
# An operation younger than this is still in its caller's hands: not even looked up. Older
# ones the PSP shows applied (or refused) are settled at once, which is safe whoever owns them;
# one the PSP shows no trace of is settled "not applied" only past the owner horizon
# (PaymentDeps.owner_horizon), so reconciliation never races an owner that is still retrying.
IN_FLIGHT_GRACE = timedelta(seconds=10)


@dataclass
class Report:
    """What one reconciliation run found and did."""

    started_at: datetime
    dry_run: bool
    finished_at: datetime | None = None
    examined: int = 0
    resolved: list[tuple[Operation, Payment, OperationState]] = field(default_factory=list)
    orphans: list[tuple[Intent, Payment | None, bool]] = field(default_factory=list)
    capture_deadlines: list[Payment] = field(default_factory=list)
    # Payments of cancelled orders found holding money, and whether they hold nothing now.
    released: list[tuple[Payment, bool]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Reconcile:
    """One reconciliation pass and how patient it is (`owner_horizon`: the deps' unless given);
    a dry run settles, releases and voids nothing, it only reports."""

    orphan_after: timedelta = DEFAULT_ORPHAN_AFTER
    in_flight_grace: timedelta = IN_FLIGHT_GRACE
    owner_horizon: timedelta | None = None
    capture_warning_window: timedelta = CAPTURE_WARNING_WINDOW
    dry_run: bool = False


async def reconcile(command: Reconcile, deps: PaymentDeps) -> Report:
    """One full pass over open operations and every PSP authorization."""
    now = datetime.now(UTC)
    report = Report(started_at=now, dry_run=command.dry_run)
    horizon = deps.owner_horizon if command.owner_horizon is None else command.owner_horizon
    await _resolve_open_operations(
        report,
        older_than=now - command.in_flight_grace,
        owners_gone_before=now - horizon,
        deps=deps,
    )
    await _release_cancelled(report, deps)
    await _void_orphans(
        report,
        older_than=now - command.orphan_after,
        warn_before=now + command.capture_warning_window,
        deps=deps,
    )
    report.finished_at = datetime.now(UTC)
    log.info(
        "reconciliation: %d intents examined, %d operations resolved, %d cancelled orders"
        " released, %d orphans, %d near capture deadline%s",
        report.examined,
        len(report.resolved),
        len(report.released),
        len(report.orphans),
        len(report.capture_deadlines),
        " (dry run)" if command.dry_run else "",
    )
    return report


async def _resolve_open_operations(
    report: Report, *, older_than: datetime, owners_gone_before: datetime, deps: PaymentDeps
) -> None:
    async with deps.unit_of_work() as uow:
        open_operations = await uow.payments.open_operations(older_than)
        # A cancellation ends every owner: a cancelled order is never authorized or captured
        # again, so its open operations need not wait out the owner horizon.
        cancelled = {
            payment.order_id
            for _, payment in open_operations
            if await uow.payments.is_cancelled(payment.order_id)
        }
    for operation, payment in open_operations:
        gone_before = older_than if payment.order_id in cancelled else owners_gone_before
        try:
            outcome = await _verdict(operation, payment, gone_before, deps)
        except PspUnavailable as error:  # this one waits for the next pass; go on with others
            log.warning("%s of order %s: %s", operation.kind.lower(), payment.order_id, error)
            continue
        if outcome is None:
            continue
        state = OperationState.FAILED if isinstance(outcome, Declined) else OperationState.SUCCEEDED
        if not report.dry_run:
            await payments.settle(operation, outcome, deps)
        report.resolved.append((operation, payment, state))


async def _verdict(
    operation: Operation, payment: Payment, owners_gone_before: datetime, deps: PaymentDeps
) -> Approved | Declined | None:
    """What to settle an open operation as, or None to leave it open for now."""
    outcome = await payments.resolve(operation, payment, deps)
    if isinstance(outcome, Unknown):
        log.info("%s of order %s: %s", operation.kind.lower(), payment.order_id, outcome.cause)
        return None  # the PSP has not decided: ask again next time
    if outcome is not None:
        return outcome  # the PSP's word: safe to settle whoever owns the operation
    last_attempt = operation.updated_at or operation.created_at
    if last_attempt is not None and last_attempt >= owners_gone_before:
        return None  # its owner may still be retrying it: never race the owner
    # Not applied, and no owner left: it failed. A repeat of its request tries it again, and a
    # late success at the PSP is an orphan the orphan step voids.
    return Declined(code=NOT_APPLIED)


async def _release_cancelled(report: Report, deps: PaymentDeps) -> None:
    """Release every payment of a cancelled order that still holds money, e.g. an
    authorization that was in flight when the order's release arrived."""
    async with deps.unit_of_work() as uow:
        holding = await uow.payments.cancelled_holding_money()
    for payment in holding:
        settled = False
        if not report.dry_run:
            try:
                released = await release.release(release.Release(order_id=payment.order_id), deps)
                settled = released.settled
            except DomainError as error:  # this one waits for the next pass; go on with others
                log.warning("release of cancelled order %s: %s", payment.order_id, error)
        report.released.append((payment, settled))


async def _void_orphans(
    report: Report, *, older_than: datetime, warn_before: datetime, deps: PaymentDeps
) -> None:
    async with deps.unit_of_work() as uow:
        ledger = await uow.payments.all_by_intent()
    async for intent in deps.psp.every_intent():
        report.examined += 1
        if intent.status != "requires_capture":
            continue
        payment = ledger.get(intent.id)
        if payment is not None and payment.status is PaymentStatus.AUTHORIZED:
            if intent.capture_before is not None and intent.capture_before < warn_before:
                log.warning(
                    "authorization of order %s must be captured before %s",
                    payment.order_id,
                    intent.capture_before,
                )
                report.capture_deadlines.append(payment)
            continue
        if intent.created is not None and intent.created > older_than:
            continue  # too young: its ledger write may still be on its way
        voided = False
        if not report.dry_run:
            outcome = await deps.psp.cancel(
                intent.id, idempotency_key=f"reconcile-void-{intent.id}"
            )
            voided = isinstance(outcome, Approved)
        log.warning(
            "orphan authorization %s (%d %s) %s",
            intent.id,
            intent.amount,
            payment.status if payment else "unknown to the ledger",
            "voided" if voided else "found",
        )
        report.orphans.append((intent, payment, voided))


def report_to_proto(report: Report) -> pb.ReconciliationReport:
    """The wire form of a reconciliation report."""
    message = pb.ReconciliationReport(dry_run=report.dry_run, payments_examined=report.examined)
    message.started_at.FromDatetime(report.started_at)
    if report.finished_at is not None:
        message.finished_at.FromDatetime(report.finished_at)
    for operation, payment, state in report.resolved:
        message.resolved_operations.append(
            pb.ResolvedOperation(
                payment_id=ids_pb2.PaymentId(value=str(payment.payment_id)),
                order_id=ids_pb2.OrderId(value=str(payment.order_id)),
                operation_id=str(operation.operation_id),
                kind=pb.PaymentOperationKind.Value(
                    f"PAYMENT_OPERATION_KIND_{operation.kind.value}"
                ),
                resolved_state=pb.PaymentOperationState.Value(
                    f"PAYMENT_OPERATION_STATE_{state.value}"
                ),
            )
        )
    for intent, orphan_payment, voided in report.orphans:
        orphan = pb.OrphanAuthorization(
            authorized=money(intent.amount, intent.currency), voided=voided
        )
        if orphan_payment is not None:
            orphan.payment_id.value = str(orphan_payment.payment_id)
            orphan.order_id.value = str(orphan_payment.order_id)
        elif "order_id" in intent.metadata:
            orphan.order_id.value = intent.metadata["order_id"]
        if intent.created is not None:
            orphan.authorized_at.FromDatetime(intent.created)
        message.orphan_authorizations.append(orphan)
    for payment in report.capture_deadlines:
        deadline = pb.CaptureDeadline(
            payment_id=ids_pb2.PaymentId(value=str(payment.payment_id)),
            order_id=ids_pb2.OrderId(value=str(payment.order_id)),
            authorized=money(payment.authorized, payment.currency),
        )
        if payment.capture_before is not None:
            deadline.capture_before.FromDatetime(payment.capture_before)
        message.capture_deadlines.append(deadline)
    for payment, settled in report.released:
        message.released_payments.append(
            pb.ReleasedPayment(
                payment_id=ids_pb2.PaymentId(value=str(payment.payment_id)),
                order_id=ids_pb2.OrderId(value=str(payment.order_id)),
                held=money(rules.held(payment), payment.currency),
                settled=settled,
            )
        )
    return message
