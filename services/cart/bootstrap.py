"""Wire the cart service: settings, database, the Redis cart cache and its upkeep, servicer.

The cache reports its own health name (`marketplace.cart.v1.CartService.cache`): NOT_SERVING
while Redis is unreachable or not yet trusted, while the cart service itself stays SERVING and
answers from PostgreSQL.
"""

from __future__ import annotations

from grpc_health.v1._async import HealthServicer
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.grpc_server import NOT_SERVING, SERVING, ServiceRegistration
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.redis_auth import redis_credentials
from marketplace_platform.service_main import ServiceFactory, ServiceParts, run_service
from marketplace_platform.settings import ServiceSettings
from services.cart.adapters import tables
from services.cart.adapters.cart_cache import DisabledCartCache, RedisCartCache
from services.cart.adapters.unit_of_work import CartUnitOfWork
from services.cart.entrypoints.grpc_servicer import CartServicer
from services.cart.service_layer.cache_upkeep import keep_cache_honest
from services.cart.service_layer.deps import CartDeps
from services.cart.service_layer.ports import CartCache

SERVICE_NAME = cart_service_pb2.DESCRIPTOR.services_by_name["CartService"].full_name
CACHE_HEALTH_NAME = f"{SERVICE_NAME}.cache"


class CartSettings(ServiceSettings):
    """Cart's settings."""

    service_name: str = "cart"
    cart_cache_enabled: bool = True
    cart_cache_ttl_seconds: float = Field(default=300.0, gt=0)
    cart_cache_timeout_ms: int = Field(default=50, ge=1)
    cart_cache_prefix: str = "cart:v1"
    cart_cache_retry_seconds: float = Field(default=0.5, gt=0)
    cart_cache_sweep_seconds: float = Field(default=1.0, gt=0)
    default_currency: str = Field(default="USD", pattern="^[A-Z]{3}$")
    # The Redis AUTH token from Secrets Manager (JSON {"token": ...}), re-read every
    # SECRETS_TTL_SECONDS for new connections, instead of a token in REDIS_URL.
    redis_auth_token_secret_arn: str | None = None
    secrets_ttl_seconds: float = Field(default=300.0, gt=0)


class CacheHealth:
    """Reports the cache's state under its own health name once the server's health exists."""

    def __init__(self) -> None:
        self.health: HealthServicer | None = None

    def attach(self, health: HealthServicer) -> None:
        """Use the server's health servicer from now on."""
        self.health = health

    async def report(self, trusted: bool) -> None:
        """SERVING while the cache is trusted, NOT_SERVING otherwise."""
        if self.health is not None:
            await self.health.set(CACHE_HEALTH_NAME, SERVING if trusted else NOT_SERVING)


def build(settings: CartSettings) -> ServiceFactory:
    """The cart gRPC service and its cache upkeep loop, bound to units of work on the engine."""

    def parts(engine: AsyncEngine) -> ServiceParts:
        unit_of_work = unit_of_work_factory(
            engine, OutboxWriter(tables.outbox, producer="cart"), kind=CartUnitOfWork
        )
        health = CacheHealth()
        cache: CartCache = DisabledCartCache()
        if settings.cart_cache_enabled:
            cache = RedisCartCache.from_url(
                settings.redis_url,
                ttl_seconds=settings.cart_cache_ttl_seconds,
                timeout_seconds=settings.cart_cache_timeout_ms / 1000,
                prefix=settings.cart_cache_prefix,
                on_change=health.report,
                credentials=redis_credentials(
                    settings.redis_auth_token_secret_arn, ttl_seconds=settings.secrets_ttl_seconds
                ),
            )
        deps = CartDeps(
            unit_of_work=unit_of_work, cache=cache, default_currency=settings.default_currency
        )
        servicer = CartServicer(deps)

        async def upkeep() -> None:
            await health.report(cache.trusted)
            if not settings.cart_cache_enabled:
                return
            try:
                await keep_cache_honest(
                    deps,
                    down_interval=settings.cart_cache_retry_seconds,
                    trusted_interval=settings.cart_cache_sweep_seconds,
                )()
            finally:
                await cache.close()

        registration = ServiceRegistration(
            SERVICE_NAME,
            lambda server: cart_service_pb2_grpc.add_CartServiceServicer_to_server(
                servicer, server
            ),
            use_health=health.attach,
        )
        return ServiceParts([registration], background=[upkeep])

    return parts


def main() -> None:
    """Entry point of the cart process."""
    settings = CartSettings()
    run_service(settings, "services.cart", build(settings))
