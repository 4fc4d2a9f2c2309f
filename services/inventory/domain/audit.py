"""A SKU's recorded counts checked against its ledger. Pure: no I/O, no framework."""

from __future__ import annotations

from dataclasses import dataclass


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
