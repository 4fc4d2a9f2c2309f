"""The stock domain, with no I/O."""

from __future__ import annotations

import pytest

from marketplace_platform.errors import FailedPrecondition
from services.inventory.domain.stock import Movement, StockLevel, set_on_hand


def test_setting_on_hand_records_the_difference() -> None:
    level, movement = set_on_hand(StockLevel("A", on_hand=10, reserved=4), 25)
    assert (level.on_hand, level.available) == (25, 21)
    assert movement == Movement("A", on_hand_delta=15, reserved_delta=0, reason="stock_set")


def test_setting_the_same_count_moves_nothing() -> None:
    _, movement = set_on_hand(StockLevel("A", on_hand=10), 10)
    assert movement is None


def test_on_hand_cannot_drop_below_what_is_reserved() -> None:
    with pytest.raises(FailedPrecondition, match="4 units are reserved"):
        set_on_hand(StockLevel("A", on_hand=10, reserved=4), 3)
