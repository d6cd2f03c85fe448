"""f1backfill.generations against a real Redis (the session's redis-server), one that is
down (a closed port, a server stopped) and one that hangs (CLIENT PAUSE)."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
import redis
from prometheus_client import CollectorRegistry

from f1backfill.errors import CacheUnavailable
from f1backfill.generations import (
    BUMP_FAILURES_METRIC,
    GENERATION_KEY,
    Generations,
    bump_failures_counter,
    generation_key,
)
from f1backfill.localredis import LocalRedis
from tests.support.waiting import wait_for

WARNING = "cannot bump cache generations"


def a_yacht() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def nowhere() -> str:
    """A Redis URL whose port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "f1backfill.generations" and r.levelno == logging.WARNING]


def failures(registry: CollectorRegistry) -> float:
    return registry.get_sample_value(BUMP_FAILURES_METRIC) or 0.0


def test_a_bump_increments_the_yachts_key_from_zero(redis_url):
    yacht, other = a_yacht(), a_yacht()
    with Generations(redis_url) as generations:
        assert generations.enabled
        assert generations.read(yacht) == 0  # absent = 0
        assert [generations.bump(yacht) for _ in range(3)] == [1, 2, 3]
        assert generations.read(yacht) == 3
        assert generations.read(other) == 0
    raw = redis.Redis.from_url(redis_url)
    try:
        # The key others (the front door) read: one format, one home.
        assert GENERATION_KEY == "f1:gen:{yacht_id}"
        assert raw.get(f"f1:gen:{yacht}") == b"3" and generation_key(yacht) == f"f1:gen:{yacht}"
    finally:
        raw.close()


def test_a_client_can_be_given_instead_of_a_url(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        generations = Generations(client=client)
        assert generations.bump("y") == 1
        generations.close()  # the giver's client stays open
        assert client.ping()
    finally:
        client.close()
    with pytest.raises(ValueError):
        Generations(redis_url, client=client)


def test_a_redis_that_is_down_costs_a_count_per_bump_and_one_warning(nowhere, caplog):
    registry = CollectorRegistry()
    generations = Generations(nowhere, registry=registry)
    caplog.set_level(logging.INFO, logger="f1backfill.generations")
    assert [generations.bump(a_yacht()) for _ in range(5)] == [None] * 5  # never raises
    assert failures(registry) == 5
    (warning,) = warnings_logged(caplog)
    assert WARNING in warning and "ConnectionError" in warning
    with pytest.raises(CacheUnavailable, match="ConnectionError"):
        generations.read(a_yacht())  # the caller decides


def test_a_counter_given_is_the_one_counted(nowhere):
    registry = CollectorRegistry()
    counter = bump_failures_counter(registry)
    Generations(nowhere, failures=counter).bump(a_yacht())
    assert failures(registry) == 1


def test_a_server_that_stops_fails_the_bumps_but_never_the_caller(caplog):
    caplog.set_level(logging.INFO, logger="f1backfill.generations")
    registry = CollectorRegistry()
    yacht = a_yacht()
    with LocalRedis.start() as server:
        generations = Generations(server.url, registry=registry)
        assert generations.bump(yacht) == 1
    assert generations.bump(yacht) is None
    assert generations.bump(yacht) is None
    assert failures(registry) == 2
    assert len(warnings_logged(caplog)) == 1
    with pytest.raises(CacheUnavailable):
        generations.read(yacht)


def pause_writes(url: str, milliseconds: int) -> None:
    admin = redis.Redis.from_url(url)
    try:
        admin.execute_command("CLIENT", "PAUSE", milliseconds, "WRITE")
    finally:
        admin.close()


def test_a_hanging_redis_times_out_and_each_outage_is_logged_once(redis_url, caplog):
    caplog.set_level(logging.INFO, logger="f1backfill.generations")
    registry = CollectorRegistry()
    yacht = a_yacht()
    generations = Generations(redis_url, registry=registry, timeout=0.2)
    assert generations.bump(yacht) == 1
    for outage in (1, 2):
        pause_writes(redis_url, 1500)  # INCR blocks until the pause ends: a timeout
        assert generations.bump(yacht) is None
        assert generations.bump(yacht) is None
        assert len(warnings_logged(caplog)) == outage
        assert "TimeoutError" in warnings_logged(caplog)[-1]
        last = wait_for(lambda: generations.bump(yacht), timeout=10)
        assert [r.getMessage() for r in caplog.records
                if r.levelno == logging.INFO][-1].startswith("Redis answers again")
    assert failures(registry) >= 4
    # (Whether Redis ran the INCRs the client gave up on is Redis's business.)
    assert generations.read(yacht) == last >= 3
    generations.close()


@pytest.mark.parametrize("url", [None, ""])
def test_without_a_url_it_does_nothing(url):
    registry = CollectorRegistry()
    generations = Generations(url, registry=registry)
    assert not generations.enabled
    assert generations.bump(a_yacht()) is None
    assert failures(registry) == 0  # nothing to bump is not a failure
    with pytest.raises(CacheUnavailable, match="no Redis configured"):
        generations.read(a_yacht())
    generations.close()


def test_its_repr_never_shows_the_url():
    generations = Generations("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(generations)
