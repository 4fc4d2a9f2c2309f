"""Money: integer minor units of one currency, the only way amounts travel in the platform."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Money:
    """An amount in integer minor units (cents) of one ISO 4217 currency."""

    amount_minor: int
    currency: str

    @classmethod
    def zero(cls, currency: str) -> Money:
        """No money, in `currency`."""
        return cls(0, currency)

    def times(self, quantity: int) -> Money:
        """This amount `quantity` times over."""
        return Money(self.amount_minor * quantity, self.currency)

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.amount_minor + other.amount_minor, self.currency)
