"""The cart cache port (`service_layer.ports.CartCache`) on Redis, and disabled.

Hot carts in Redis, cache-aside, never trusted blindly.

Entries are `"<version>|<kind>|<payload>"`: kind `c` holds a cart at that version, kind `t` is a
write's tombstone saying "the cart is at this version now, anything older is stale". One Lua
script writes both and refuses to replace a newer version (and a cart entry never replaces a
tombstone of a newer version), so a reader that loaded an old cart from PostgreSQL cannot put
it back after a writer has invalidated.

Every Redis call has a short deadline and every failure is swallowed: the cache goes DOWN
(logged once, reported through `on_change`), reads and fills stop, and callers are served from
PostgreSQL. It is trusted again only after `service_layer.cache_upkeep` has applied every
invalidation owed while it was away (see `restored`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider

from marketplace_platform.metrics import CART_CACHE, CART_CACHE_DEGRADED
from marketplace_platform.redis_auth import url_without_auth
from services.cart.domain.cart import Cart
from services.cart.domain.codec import cart_from_json, cart_to_json
from services.cart.service_layer.ports import CacheState, CartCache

log = logging.getLogger(__name__)

# Replace the entry unless it holds a newer version, or the same version as a cart already.
_PUT_UNLESS_NEWER = """
local current = redis.call('GET', KEYS[1])
local version = tonumber(ARGV[1])
if current then
  local sep = string.find(current, '|', 1, true)
  local held = tonumber(string.sub(current, 1, sep - 1))
  if held > version then return 0 end
  if held == version and ARGV[2] == 'c' and string.sub(current, sep + 1, sep + 1) == 'c' then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""


StateListener = Callable[[bool], Awaitable[None]]


class DisabledCartCache(CartCache):
    """The disabled cache: nothing is cached, every read goes to PostgreSQL; never trusted."""

    state = CacheState.DOWN

    @property
    def trusted(self) -> bool:
        """Never: it stays DOWN."""
        return self.state is CacheState.TRUSTED

    async def read(self, cart_id: uuid.UUID) -> Cart | None:
        """Always a miss."""
        return None

    async def fill(self, cart: Cart) -> None:
        """Nothing to fill."""

    async def invalidate(self, cart_id: uuid.UUID, version: int) -> bool:
        """Not taken: the invalidation stays owed in PostgreSQL."""
        return False

    async def ping(self) -> bool:
        """Never answers."""
        return False

    def begin_recovery(self) -> None:
        """Stays DOWN."""

    async def restored(self) -> None:
        """Stays DOWN."""

    async def close(self) -> None:
        """Nothing to release."""


class RedisCartCache(CartCache):
    """The cart cache on Redis, with version-guarded entries and a DOWN/RECOVERING/TRUSTED state."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_seconds: float,
        timeout_seconds: float,
        prefix: str = "cart:v1",
        on_change: StateListener | None = None,
    ) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_seconds * 1000)
        self.timeout = timeout_seconds
        self.prefix = prefix
        self.on_change = on_change
        # Untrusted from the start: a previous process may have left invalidations owed.
        self.state = CacheState.DOWN
        CART_CACHE_DEGRADED.set(1)
        self._down_logged = False
        self._put = redis.register_script(_PUT_UNLESS_NEWER)

    @property
    def trusted(self) -> bool:
        return self.state is CacheState.TRUSTED

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl_seconds: float,
        timeout_seconds: float,
        prefix: str = "cart:v1",
        on_change: StateListener | None = None,
        credentials: CredentialProvider | None = None,
    ) -> RedisCartCache:
        """A cache on a new client whose sockets give up after `timeout_seconds`, no retries
        (`credentials`: AUTH for each new connection, e.g. a rotating token)."""
        client = Redis.from_url(
            url if credentials is None else url_without_auth(url),
            credential_provider=credentials,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            max_connections=256,
        )
        return cls(
            client,
            ttl_seconds=ttl_seconds,
            timeout_seconds=timeout_seconds,
            prefix=prefix,
            on_change=on_change,
        )

    def key(self, cart_id: uuid.UUID) -> str:
        """The Redis key of a cart."""
        return f"{self.prefix}:{cart_id}"

    async def read(self, cart_id: uuid.UUID) -> Cart | None:
        if self.state is not CacheState.TRUSTED:
            CART_CACHE.labels("bypassed").inc()
            return None
        try:
            async with asyncio.timeout(self.timeout):
                raw: bytes | str | None = await self.redis.get(self.key(cart_id))
        except Exception as error:  # any cache failure means: answer from PostgreSQL
            CART_CACHE.labels("error").inc()
            await self._failed("read", error)
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        kind, payload = text.split("|", 2)[1:] if text is not None else ("", "")
        CART_CACHE.labels("hit" if kind == "c" else "miss").inc()
        return cart_from_json(payload) if kind == "c" else None

    async def fill(self, cart: Cart) -> None:
        if self.state is CacheState.TRUSTED:
            await self._guarded_put(cart.cart_id, cart.version, "c", cart_to_json(cart))

    async def invalidate(self, cart_id: uuid.UUID, version: int) -> bool:
        if self.state is CacheState.DOWN:
            return False
        return await self._guarded_put(cart_id, version, "t", "")

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except Exception as error:
            await self._failed("ping", error)
            return False
        return True

    def begin_recovery(self) -> None:
        if self.state is CacheState.DOWN:
            self.state = CacheState.RECOVERING

    async def restored(self) -> None:
        # Only from RECOVERING: a failure during recovery (state DOWN) must not be forgotten.
        if self.state is CacheState.RECOVERING:
            self.state = CacheState.TRUSTED
            CART_CACHE_DEGRADED.set(0)
            self._down_logged = False
            log.info("cart cache trusted again: owed invalidations applied")
            await self._notify(True)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _guarded_put(self, cart_id: uuid.UUID, version: int, kind: str, payload: str) -> bool:
        value = f"{version}|{kind}|{payload}"
        try:
            async with asyncio.timeout(self.timeout):
                await self._put(keys=[self.key(cart_id)], args=[version, kind, value, self.ttl_ms])
        except Exception as error:
            await self._failed("write", error)
            return False
        return True

    async def _failed(self, doing: str, error: Exception) -> None:
        was_trusted = self.trusted
        self.state = CacheState.DOWN
        CART_CACHE_DEGRADED.set(1)
        if not self._down_logged:  # once per outage, not once per call or recovery attempt
            self._down_logged = True
            log.warning(
                "cart cache DOWN (%s failed: %r); serving from PostgreSQL until it is restored",
                doing,
                error,
            )
        if was_trusted:
            await self._notify(False)

    async def _notify(self, trusted: bool) -> None:
        if self.on_change is not None:
            await self.on_change(trusted)
