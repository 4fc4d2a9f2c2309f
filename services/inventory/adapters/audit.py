"""The stock audit: every SKU's counts recomputed from the movement ledger and reservations."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory.domain.audit import AuditedSku
from services.inventory.service_layer.ports import StockAuditor

_AUDIT = text(
    """
    SELECT s.sku, s.on_hand, s.reserved, s.sold,
           COALESCE(m.on_hand, 0) AS ledger_on_hand,
           COALESCE(m.reserved, 0) AS ledger_reserved,
           COALESCE(m.sold, 0) AS ledger_sold,
           COALESCE(a.reserved, 0) AS active_reserved
      FROM inventory.stock_items s
      LEFT JOIN (
            SELECT sku, sum(on_hand_delta)::bigint AS on_hand,
                   sum(reserved_delta)::bigint AS reserved,
                   (sum(-on_hand_delta) FILTER (WHERE reason IN ('committed', 'returned')))::bigint
                   AS sold
              FROM inventory.stock_movements GROUP BY sku
      ) m ON m.sku = s.sku
      LEFT JOIN (
            SELECT l.sku, sum(l.quantity)::bigint AS reserved
              FROM inventory.reservation_lines l
              JOIN inventory.reservations r ON r.reservation_id = l.reservation_id
             WHERE r.status = 'ACTIVE'
             GROUP BY l.sku
      ) a ON a.sku = s.sku
     WHERE cardinality(CAST(:skus AS text[])) = 0 OR s.sku = ANY(CAST(:skus AS text[]))
     ORDER BY s.sku
    """
)


class LedgerAudit(StockAuditor):
    """The audit as one query over the inventory schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def recompute(self, skus: Sequence[str] = ()) -> list[AuditedSku]:
        """Recompute the given SKUs (all when empty) from the ledger."""
        rows = await self.session.execute(_AUDIT, {"skus": list(skus)})
        return [AuditedSku(**row) for row in rows.mappings()]
