"""Server and client interceptors: request context, field rules, error mapping, deadlines."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message

from marketplace_platform import errors
from marketplace_platform.grpc_errors import to_status
from marketplace_platform.metrics import measured
from marketplace_platform.request_context import (
    REQUEST_ID_HEADER,
    deadline_var,
    new_request_id,
    remaining_budget,
    request_id_var,
)
from marketplace_platform.validation import check_request

log = logging.getLogger(__name__)

# Health checking and reflection answer as usual, even while draining.
_PLATFORM_SERVICES = ("/grpc.health.", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServiceBoundaryInterceptor(grpc.aio.ServerInterceptor):
    """Everything a call goes through before and after its handler, for every service.

    Sets the request id and deadline context, enforces the contract's field rules before any
    handler runs, and turns domain errors into statuses with details (never a stack trace).
    It also counts calls in flight, so shutdown can refuse new calls with UNAVAILABLE (which
    clients retry elsewhere) while the ones already running finish.
    """

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start_draining(self) -> None:
        """From now on, refuse new calls to our services with UNAVAILABLE."""
        self.draining = True

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        await self._idle.wait()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        if method.startswith(_PLATFORM_SERVICES):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._counted(
                method,
                measured(method, _at_boundary(method, cast(UnaryBehavior, handler.unary_unary))),
            ),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _counted(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            self._in_flight += 1
            self._idle.clear()
            try:
                return await behavior(request, context)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        return call


def _at_boundary(method: str, behavior: UnaryBehavior) -> UnaryBehavior:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID_HEADER) or new_request_id())
        remaining = context.time_remaining()
        request_token = request_id_var.set(request_id)
        deadline_token = deadline_var.set(
            time.monotonic() + remaining if remaining is not None else None
        )
        await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
        try:
            if isinstance(request, Message):
                check_request(request)
            return await behavior(request, context)
        except errors.DomainError as error:
            log.info("%s refused: %s (%s)", method, error.message, error.reason)
            status = to_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except grpc.aio.AbortError:
            raise
        except NotImplementedError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
        except Exception:
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request {request_id})")
        finally:
            request_id_var.reset(request_token)
            deadline_var.reset(deadline_token)

    return call


class DeadlineAndRequestIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Give every outgoing call a deadline and pass the current request id along.

    The deadline is the caller's own timeout if set, else the default, and never more than
    what is left of the incoming request's budget.
    """

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        timeout = client_call_details.timeout or self.default_timeout
        budget = remaining_budget()
        if budget is not None:
            timeout = min(timeout, budget)
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        request_id = request_id_var.get()
        if request_id and not metadata.get_all(REQUEST_ID_HEADER):
            metadata.add(REQUEST_ID_HEADER, request_id)
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=timeout,
            metadata=metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)
