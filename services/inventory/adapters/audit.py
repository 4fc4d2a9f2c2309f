"""The stock audit: every SKU's counts recomputed from the movement ledger and reservations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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


@dataclass(frozen=True)
class AuditedSku:
    """A SKU's recorded counts next to what the ledger and active reservations say."""

    sku: str
    on_hand: int
    reserved: int
    sold: int
    ledger_on_hand: int
    ledger_reserved: int
    ledger_sold: int
    active_reserved: int

    @property
    def problems(self) -> list[str]:
        """Every way the recorded counts disagree with the ledger (empty when clean)."""
        found = []
        if self.on_hand != self.ledger_on_hand:
            found.append(f"on_hand {self.on_hand} but the ledger says {self.ledger_on_hand}")
        if self.reserved != self.ledger_reserved:
            found.append(f"reserved {self.reserved} but the ledger says {self.ledger_reserved}")
        if self.reserved != self.active_reserved:
            found.append(
                f"reserved {self.reserved} but active reservations hold {self.active_reserved}"
            )
        if self.sold != self.ledger_sold:
            found.append(f"sold {self.sold} but the ledger says {self.ledger_sold}")
        if self.on_hand < self.reserved or self.reserved < 0:
            found.append("negative available stock")
        return found


async def audit_stock(session: AsyncSession, skus: Sequence[str] = ()) -> list[AuditedSku]:
    """Recompute the given SKUs (all when empty) from the ledger."""
    rows = await session.execute(_AUDIT, {"skus": list(skus)})
    return [AuditedSku(**row) for row in rows.mappings()]
