"""Tax: a deterministic rate table by shipping country, so a repeat always gives the same tax."""

from __future__ import annotations

from collections.abc import Mapping

from marketplace_platform.money import Money

# Rates in basis points (1/100 of a percent). Illustrative flat rates per destination country;
# a real deployment swaps this table for a tax provider behind the same function.
RATES_BPS: Mapping[str, int] = {
    "US": 725,
    "CA": 500,
    "GB": 2000,
    "DE": 1900,
    "FR": 2000,
    "NL": 2100,
    "JP": 1000,
}
DEFAULT_RATE_BPS = 1000


def rate_bps(country: str) -> int:
    """The rate for a destination country, or the default rate."""
    return RATES_BPS.get(country.upper(), DEFAULT_RATE_BPS)


def tax_on(subtotal: Money, country: str) -> Money:
    """Tax on a subtotal shipped to `country`, rounded half up to the minor unit."""
    numerator = subtotal.amount_minor * rate_bps(country)
    return Money((numerator + 5_000) // 10_000, subtotal.currency)
