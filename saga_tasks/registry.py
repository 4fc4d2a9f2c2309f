"""The saga task handlers by the Task Resource placeholder that names them in the definition.

`"${ReserveInventoryFunctionArn}"` in deploy/ecs/checkout_saga.asl.json is run by
HANDLERS["ReserveInventoryFunctionArn"] (blocking, as a Lambda runs it) or awaited as
ASYNC_HANDLERS["ReserveInventoryFunctionArn"] (the local engine); RAISES and REQUIRES say which
named errors each one may end with and which input fields it reads, so tests can hold the
definition to them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from saga_tasks import (
    authorize_payment,
    calculate_tax,
    commit_reservation,
    confirm_order,
    fail_order,
    fraud_check,
    release_inventory,
    reserve_inventory,
    void_payment,
)
from saga_tasks.clients import StepCore

_STEPS: dict[str, ModuleType] = {
    "CalculateTaxFunctionArn": calculate_tax,
    "FraudCheckFunctionArn": fraud_check,
    "ReserveInventoryFunctionArn": reserve_inventory,
    "AuthorizePaymentFunctionArn": authorize_payment,
    "CommitReservationFunctionArn": commit_reservation,
    "ConfirmOrderFunctionArn": confirm_order,
    "VoidPaymentFunctionArn": void_payment,
    "ReleaseInventoryFunctionArn": release_inventory,
    "FailOrderFunctionArn": fail_order,
}

# What a Lambda runs: handler(event, context), blocking.
HANDLERS: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    name: module.handler for name, module in _STEPS.items()
}
# What the local saga engine awaits on its own loop: the same steps' async cores.
ASYNC_HANDLERS: dict[str, StepCore] = {name: module.run for name, module in _STEPS.items()}
RAISES: dict[str, frozenset[str]] = {name: module.RAISES for name, module in _STEPS.items()}
REQUIRES: dict[str, frozenset[str]] = {name: module.REQUIRES for name, module in _STEPS.items()}
