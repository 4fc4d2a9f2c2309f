"""Turn a failed call to another service back into a domain error."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.grpc_errors import from_rpc_error

T = TypeVar("T")


async def called(service: str, call: Awaitable[T]) -> T:
    """Await a gRPC call; a refusal becomes the server's domain error, anything else
    (deadline, connection) DependencyUnavailable."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        refused = from_rpc_error(error)
        if refused is not None:
            raise refused from error
        raise DependencyUnavailable(
            f"{service} did not answer: {error.code().name} {error.details()}"
        ) from error
