"""The flash sale on the real multi-process stack: one SKU with S units and N >> S buyers
checking out at the same moment (each double-clicking) ends with exactly S orders CONFIRMED (or
SHIPPED), every other one CANCELLED out_of_stock, and the shelf empty with nothing reserved."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.stack import LaunchedStack
from verification.flash_sale import FlashSale, problems, run_flash_sale, sold_orders

pytestmark = pytest.mark.stack

UNITS = 5
BUYERS = 60


@pytest.mark.timeout(300)
async def test_a_flash_sale_sells_exactly_its_units(stack: LaunchedStack) -> None:
    await stack.wait_for_line("all services SERVING", within=90)

    sale = await run_flash_sale(stack.url("gateway"), units=UNITS, buyers=BUYERS)

    assert problems(sale) == [], sale
    assert sold_orders(sale) == UNITS
    assert sale.outcomes["CANCELLED out_of_stock"] == BUYERS - UNITS
    assert (sale.stock["on_hand"], sale.stock["reserved"]) == (0, 0)


def test_the_flash_sale_check_catches_an_oversell() -> None:
    oversold = FlashSale(
        sku="FLASH-1",
        units=UNITS,
        buyers=BUYERS,
        outcomes=Counter({"CONFIRMED": UNITS + 1, "CANCELLED out_of_stock": BUYERS - UNITS - 1}),
        stock={"on_hand": -1, "reserved": 0, "available": -1},
        unanswered=0,
    )

    found = problems(oversold)

    assert f"{UNITS + 1} orders CONFIRMED or SHIPPED for {UNITS} units" in found
    assert any("stock after the sale" in p for p in found)
