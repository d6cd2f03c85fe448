"""Per-yacht cache generations in Redis: `f1:gen:{yacht_id}`, absent = 0.

The search front door caches results under keys that carry the yacht's generation.
Whatever changes a yacht's embeddings bumps it with one INCR (the worker after each batch
it wrote, the operator when a Job ends), so a cached result never outlives a re-embed: the
next search reads the new generation and misses.

A bump is best effort: Redis away must never fail a batch or a reconciliation. A failed
bump is counted in `f1_cache_generation_bump_failures_total` and logged once per outage,
not once per call. `read` raises `CacheUnavailable` instead, and the caller decides (the
front door serves uncached). Without a Redis URL the object does nothing, so callers need
no `if`.

With an `edge` (`f1backfill.edgekv.EdgeGenerations`), each new value is also written to the
edge Worker's KV, so that the edge's cache misses too; `close()` writes what it held back.

Sync redis-py, with short timeouts: the worker calls it from its lanes, the operator
through `asyncio.to_thread`. redis-py is imported, and the client made, at the first call:
importing it took 0.06-0.4 s of a worker's start, which was on the way to its first
request (docs/benchmarks.md, the gap between Jobs).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Final, Self

from prometheus_client import CollectorRegistry, Counter

from .edgekv import EdgeGenerations
from .errors import CacheUnavailable

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

GENERATION_KEY: Final = "f1:gen:{yacht_id}"
BUMP_FAILURES_METRIC: Final = "f1_cache_generation_bump_failures_total"
# Connect and command timeout. An INCR takes well under a millisecond; a Redis that does
# not answer within a second is treated as away rather than stalling a worker's lane.
SOCKET_TIMEOUT_SECONDS: Final = 1.0


def generation_key(yacht_id: str) -> str:
    return GENERATION_KEY.format(yacht_id=yacht_id)


def bump_failures_counter(registry: CollectorRegistry) -> Counter:
    """The failure counter, in `registry` (the worker's or the operator's)."""
    return Counter(BUMP_FAILURES_METRIC,
                   "Cache generation bumps that failed (Redis unreachable or refusing)",
                   registry=registry)


class Generations:
    """Bump and read yachts' cache generations; a no-op without a Redis URL.

    `redis_url` (redis://, rediss:// or unix://) or an existing `client`; failures go to
    `failures`, else to a counter created in `registry`, else in a registry of its own.
    `edge` also receives every new value (and is flushed by `close`).
    """

    def __init__(self, redis_url: str | None = None, *, client: Redis | None = None,
                 failures: Counter | None = None, registry: CollectorRegistry | None = None,
                 timeout: float = SOCKET_TIMEOUT_SECONDS,
                 edge: EdgeGenerations | None = None) -> None:
        if redis_url and client is not None:
            raise ValueError("give a Redis URL or a client, not both")
        self._owned = bool(redis_url)
        self._url = redis_url or None
        self._timeout = timeout
        self._client = client
        self.edge = edge
        self._making = threading.Lock()
        self.failures = failures if failures is not None else bump_failures_counter(
            registry if registry is not None else CollectorRegistry())
        self._lock = threading.Lock()
        self._down = False  # within an outage: logged already

    @property
    def enabled(self) -> bool:
        return self._client is not None or self._url is not None

    def _redis(self) -> Redis:
        """The client: the one given, or one made from the URL at the first call (a URL
        it cannot read raises ValueError, counted as a failure like Redis away)."""
        if self._client is None and self._url is not None:
            with self._making:
                if self._client is None:
                    from redis import Redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    # One retry without delay: a pooled connection that Redis closed (a
                    # restart) is reopened at once; anything longer belongs to the next call.
                    self._client = Redis.from_url(
                        self._url, socket_timeout=self._timeout,
                        socket_connect_timeout=self._timeout, retry=Retry(NoBackoff(), 1))
        assert self._client is not None
        return self._client

    def bump(self, yacht_id: str) -> int | None:
        """INCR the yacht's generation; its new value (published to the edge too), or None
        when there is no Redis or it failed (counted; logged at the first failure of an
        outage). Never raises."""
        if not self.enabled:
            return None
        from redis import RedisError  # at the first call (see the module's docstring)

        try:
            value = int(self._redis().incr(generation_key(yacht_id)))
        except (RedisError, OSError, ValueError) as exc:
            self.failures.inc()
            with self._lock:
                first, self._down = not self._down, True
            if first:
                log.warning("cannot bump cache generations in Redis (%s: %s); searches may "
                            "serve results cached before this re-embed. Skipped bumps are "
                            "counted in %s until Redis answers again",
                            type(exc).__name__, exc, BUMP_FAILURES_METRIC)
            return None
        if self._down:
            with self._lock:
                back, self._down = self._down, False
            if back:
                log.info("Redis answers again: cache generation bumps resume")
        if self.edge is not None:
            self.edge.publish(yacht_id, value)
        return value

    def read(self, yacht_id: str) -> int:
        """The yacht's generation (0 when never bumped). Raises CacheUnavailable when there
        is no Redis or it does not answer."""
        if not self.enabled:
            raise CacheUnavailable("no Redis configured (REDIS_URL is empty)")
        from redis import RedisError  # at the first call (see the module's docstring)

        try:
            value = self._redis().get(generation_key(yacht_id))
            return int(value) if value is not None else 0
        except (RedisError, OSError, ValueError) as exc:
            raise CacheUnavailable(f"cannot read the cache generation of yacht {yacht_id} "
                                   f"({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        """Write the values the edge publisher held back; close the connections of a
        client made here (a client given is the giver's)."""
        if self.edge is not None:
            self.edge.flush()
        if self._owned and self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"Generations(enabled={self.enabled})"
