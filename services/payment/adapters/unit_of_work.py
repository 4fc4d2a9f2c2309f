"""Payment's unit of work on PostgreSQL: one transaction, with the SQL payment repository bound
to it (the AbstractPaymentUnitOfWork of the service layer's ports)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import UnitOfWork
from services.payment.adapters.payment_repository import SqlPaymentRepository
from services.payment.service_layer.ports import PaymentRepository


class PaymentUnitOfWork(UnitOfWork):
    """A transaction of the payment schema: `uow.payments` reads and writes payments, their
    operations and the cancelled orders within it; `uow.publish` records events in it."""

    payments: PaymentRepository

    def _bind(self, session: AsyncSession) -> None:
        """Attach the payment repository to this transaction's session."""
        self.payments = SqlPaymentRepository(session)
