"""The checkout benchmark's closing audit: the money and stock of every order the run placed.

Once every order of the run has settled, the chaos harness's own collector (verification.collect)
reads checkout's orders, the PSP simulator's intents (its listing, before any reconciliation),
inventory's counts and its ledger audit; the harness's invariants (verification.invariants)
then check that every order settled as its client was answered, that each CONFIRMED or SHIPPED
order holds or keeps exactly its total at the PSP once and a CANCELLED one nothing, and that
each SKU's stock is conserved. The collector's snapshot has no currencies, so the one check
added here is that every intent is in its order's currency. Any counterexample fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.checkout_traffic import CUSTOMER_PREFIX
from local_supervisor.launcher import LaunchedStack
from verification import collect
from verification.invariants import (
    InvariantResult,
    Verdict,
    no_double_charge,
    no_oversell,
    one_order_per_key_and_all_settle,
)
from verification.snapshot import ClientCheckout, Snapshot
from verification.stack import ChaosStack

SETTLE_WITHIN = 300.0
PSP_PAGE = 100
# Settling as answered, money at the PSP, stock: the promises about each order placed. The
# event pipeline's (one parcel, nothing dropped) are the chaos run's to check.
AUDITED = (one_order_per_key_and_all_settle, no_double_charge, no_oversell)


@dataclass(frozen=True, kw_only=True)
class AuditReport:
    """What the audit examined and every mismatch it found."""

    orders: int
    intents: int
    skus: int
    results: tuple[InvariantResult, ...]
    currency_mismatches: tuple[str, ...] = ()

    @property
    def mismatches(self) -> tuple[str, ...]:
        """Every counterexample, each prefixed with the invariant it breaks."""
        found = [
            f"{result.number}. {problem}"
            for result in self.results
            if result.verdict is Verdict.FAIL
            for problem in result.counterexamples
        ]
        return (*found, *(f"currency: {problem}" for problem in self.currency_mismatches))

    @property
    def passed(self) -> bool:
        """Whether nothing was found wrong."""
        return not self.mismatches

    def as_json(self) -> dict[str, Any]:
        """The report's figures, each invariant's verdict and the mismatches."""
        return {
            "orders_audited": self.orders,
            "psp_intents": self.intents,
            "skus": self.skus,
            "passed": self.passed,
            "mismatches": list(self.mismatches),
            "invariants": [
                {
                    "number": r.number,
                    "title": r.title,
                    "verdict": r.verdict.value,
                    "examined": r.examined,
                }
                for r in self.results
            ],
        }


def audit_snapshot(
    snapshot: Snapshot,
    *,
    order_currencies: Mapping[str, str],
    intent_currencies: Mapping[str, str],
) -> AuditReport:
    """The audited invariants over a snapshot, and each intent's currency against its order's."""
    wrong_currency = []
    for intent in snapshot.intents:
        currency = intent_currencies.get(intent.intent_id)
        wanted = order_currencies.get(intent.order_id or "")
        if currency is not None and wanted is not None and currency.upper() != wanted.upper():
            wrong_currency.append(
                f"intent {intent.intent_id} is in {currency}, its order {intent.order_id} in "
                f"{wanted}"
            )
    return AuditReport(
        orders=len(snapshot.orders),
        intents=len(snapshot.intents),
        skus=len(snapshot.initial_stock),
        results=tuple(check(snapshot) for check in AUDITED),
        currency_mismatches=tuple(wrong_currency),
    )


async def audit_run(
    stack: LaunchedStack,
    database_url: str,
    *,
    initial_stock: Mapping[str, int],
    checkouts: Sequence[ClientCheckout],
) -> AuditReport:
    """Wait for every order of the run to settle, read the PSP and the stock, check them."""
    target = ChaosStack(
        database_url, stack.data_dir, stack.ports.base_port, stack.ports.http_ports, stack
    )
    scope = collect.Scope(CUSTOMER_PREFIX, tuple(initial_stock))
    waited, unsettled = await collect.settle(target, scope, within=SETTLE_WITHIN, pipeline=False)
    async with httpx.AsyncClient(base_url=stack.url("psp")) as psp:
        snapshot, _ = await collect.take_snapshot(
            target,
            psp,
            scope,
            initial_stock=dict(initial_stock),
            clients=collect.ClientRecords(checkouts=checkouts),
            settle_seconds=SETTLE_WITHIN if unsettled else waited,
        )
        intent_currencies = await _intent_currencies(psp)
    return audit_snapshot(
        snapshot,
        order_currencies=await _order_currencies(database_url),
        intent_currencies=intent_currencies,
    )


async def _order_currencies(database_url: str) -> dict[str, str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT order_id::text AS order_id, currency FROM checkout.orders"
            " WHERE customer_id LIKE $1",
            CUSTOMER_PREFIX + "%",
        )
    finally:
        await connection.close()
    return {row["order_id"]: row["currency"] for row in rows}


async def _intent_currencies(psp: httpx.AsyncClient) -> dict[str, str]:
    """Each PSP intent's currency (the collector's listing leaves it out)."""
    found: dict[str, str] = {}
    after: str | None = None
    while True:
        params = {"limit": str(PSP_PAGE)} | ({"starting_after": after} if after else {})
        answer = await psp.get("/v1/payment_intents", params=params, timeout=30)
        answer.raise_for_status()
        page: dict[str, Any] = answer.json()
        for item in page["data"]:
            found[item["id"]] = item["currency"]
            after = item["id"]
        if not page.get("has_more") or not page["data"]:
            return found


def print_audit(report: AuditReport) -> None:
    """One line of figures, each invariant's verdict, and every mismatch."""
    verdict = "passed" if report.passed else f"FAILED: {len(report.mismatches)} mismatch(es)"
    print(f"audit: {report.orders} orders, {report.intents} PSP intents, {report.skus} SKUs: "
          f"{verdict}")  # fmt: skip
    for result in report.results:
        print(f"  {result.number}. {result.title}: {result.verdict.value} ({result.examined})")
    for mismatch in report.mismatches:
        print(f"  MISMATCH {mismatch}")
