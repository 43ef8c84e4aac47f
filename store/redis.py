"""The connection to the state store: a Redis URL, or the master that Redis Sentinel names.

Through Sentinel, a command that meets a dead or demoted master (a failover under way) is
retried with exponential backoff, the master asked of the sentinels again before each new
connection, for up to ``BONMONIQ_REDIS_RETRY_SECONDS`` from its first attempt: the caller
sees the answer of the new master, not the failover. Pub/sub and pipelines of the client go
through the same connection pool. Each change of the master this process talks to counts in
``bonmoniq_redis_failovers_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, ReadOnlyError, TimeoutError

from store.metrics import REDIS_FAILOVERS
from store.settings import StoreSettings

__all__ = ["FailoverRetry", "connect"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Seconds a connection attempt (or a sentinel's answer) may take before it counts as failed.
CONNECT_TIMEOUT_S = 2.0


class FailoverRetry(Retry):
    """Retry on connection errors with exponential backoff until ``seconds`` have passed.

    A deadline rather than a count: redis-py retries the connection inside each retried
    command, and a deadline keeps the two from multiplying when Redis stays down.
    """

    def __init__(self, seconds: float) -> None:
        """Backoff from 0.1 s, doubling, at most 1 s between attempts, for ``seconds``."""
        super().__init__(
            ExponentialBackoff(cap=1.0, base=0.05),
            retries=max(1, int(seconds) * 2),
            supported_errors=(ConnectionError, TimeoutError, ReadOnlyError),
        )
        self.seconds = seconds

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """``do()``, again after each supported error until the deadline; its result."""
        deadline = time.monotonic() + self.seconds
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    await fail(error, failures)  # type: ignore[call-arg]
                else:
                    await fail(error)  # type: ignore[call-arg]
                pause = self._backoff.compute(failures)
                if time.monotonic() + pause > deadline:
                    raise error
                await asyncio.sleep(pause)


class _SentinelConnection(SentinelManagedConnection):
    """A connection that asks the sentinels for the master each time it connects again."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        # redis-py reconnects a dropped connection here, to the address it had before the
        # failover (redis/redis-py#3874); its own sentinel-aware connect passes False.
        if retry_socket_connect and not self.is_connected:
            await self.connect()
            return
        await super().connect_check_health(check_health, retry_socket_connect)


class _WatchedPool(SentinelConnectionPool):
    """The master's pool; counts each change of the master address the sentinels give."""

    _seen: tuple[str, int] | None = None

    async def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = await super().get_master_address()
        if self._seen is not None and address != self._seen:
            REDIS_FAILOVERS.inc()
            log.warning(
                "redis master changed",
                extra={"from": _named(self._seen), "to": _named(address)},
            )
        self._seen = address
        return address


def _named(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _through_sentinels(store: StoreSettings) -> Redis:
    """A client of the master that the sentinels of ``store`` name (and name again later)."""
    password = store.password.get_secret_value() if store.password else None
    sentinel_password = (
        store.sentinel_password.get_secret_value() if store.sentinel_password else None
    )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": CONNECT_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "decode_responses": True,
    }
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    sentinel = Sentinel(store.sentinel_addrs, sentinel_kwargs=sentinel_kwargs)
    client: Redis = sentinel.master_for(
        store.master_name,
        redis_class=Redis,
        connection_pool_class=_WatchedPool,
        connection_class=_SentinelConnection,
        decode_responses=True,
        password=password,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=30,
        retry=FailoverRetry(store.retry_seconds),
        retry_on_error=[ConnectionError, TimeoutError, ReadOnlyError],
    )
    return client


def connect(where: str | StoreSettings) -> Redis:
    """An asyncio Redis client that returns strings.

    ``where``: a Redis URL, or the store's settings (the sentinels when they are given,
    otherwise its URL).

    Raises:
        ValueError: settings with neither sentinels nor a URL.
    """
    if isinstance(where, StoreSettings):
        if where.sentinels:
            return _through_sentinels(where)
        if not where.url:
            raise ValueError("neither BONMONIQ_REDIS_SENTINELS nor BONMONIQ_REDIS_URL is set")
        where = where.url
    return Redis.from_url(where, decode_responses=True, health_check_interval=30)
