"""The search cache in Redis, keyed by the yacht's generation.

`f1:search:{yacht_id}:{role}:{generation}:{sha256(normalised query)}:{limit}`: the role
decides what a user may see, the generation changes with every re-embed of the yacht (the
worker bumps it after each batch, the operator when a Job completes), so a cached result
never outlives the embeddings it was computed from; an old generation's keys simply expire.

The cache never fails a search: Redis away means an uncached search, said once in the log
(and again once it is back) and counted in `f1_search_cache_errors_total`. Concurrent
misses of one key in this process run one search (single flight).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from ..generations import GENERATION_KEY

log = logging.getLogger(__name__)

SEARCH_KEY = "f1:search:{yacht_id}:{role}:{generation}:{digest}:{limit}"

T = TypeVar("T")


def query_digest(normalized_query: str) -> str:
    return hashlib.sha256(normalized_query.encode()).hexdigest()


def search_key(yacht_id: str, role: str, generation: int, normalized_query: str,
               limit: int) -> str:
    return SEARCH_KEY.format(yacht_id=yacht_id, role=role, generation=generation,
                             digest=query_digest(normalized_query), limit=limit)


class SearchCache:
    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int, errors: Counter) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.errors = errors
        self._down = False  # said that Redis is away; said again once it is back
        self._flights: dict[str, asyncio.Future[Any]] = {}

    async def _call(self, what: str, call: Awaitable[T]) -> T | None:
        """A Redis call, or None when Redis is away (logged once per outage, counted)."""
        try:
            result = await call
        except (RedisError, OSError) as exc:
            self.errors.inc()
            if not self._down:
                self._down = True
                log.warning("Redis is away (%s: %s): searches are served uncached", what, exc)
            return None
        if self._down:
            self._down = False
            log.info("Redis is back: searches are cached again")
        return result

    async def generation(self, yacht_id: str) -> int | None:
        """The yacht's generation (0 before its first re-embed); None: Redis is away."""
        raw = await self._call("generation", self.client.get(
            GENERATION_KEY.format(yacht_id=yacht_id)))
        if raw is None and self._down:
            return None
        return int(raw or 0)

    async def get(self, key: str) -> list[dict[str, Any]] | None:
        raw = await self._call("get", self.client.get(key))
        return json.loads(raw) if raw is not None else None

    async def put(self, key: str, hits: list[dict[str, Any]]) -> None:
        await self._call("put", self.client.set(key, json.dumps(hits), ex=self.ttl_seconds))

    async def holds(self, key: str) -> bool:
        return bool(await self._call("exists", self.client.exists(key)))

    async def ping(self) -> bool:
        return bool(await self._call("ping", self.client.ping()))

    async def single_flight(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """`compute()` once for concurrent callers of one key; each gets its result."""
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await compute()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            del self._flights[key]
