"""What a refused gRPC call says: the domain error it carries."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from marketplace_platform import errors
from marketplace_platform.grpc_errors import from_rpc_error


async def refusal(call: Awaitable[Any]) -> errors.DomainError:
    """The domain error of `call`, which must fail with one."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = from_rpc_error(caught.value)
    assert error is not None, caught.value
    return error
