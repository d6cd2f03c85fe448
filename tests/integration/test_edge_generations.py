"""Publishing generations to the edge's KV (f1backfill.edgekv) over HTTP, against the
sandbox's fake of Cloudflare's API; with Generations against the session's real Redis."""

from __future__ import annotations

import logging
import socket
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from f1backfill.edgekv import (
    MIN_INTERVAL_SECONDS,
    OUTAGE_PAUSE_SECONDS,
    PUBLISH_FAILURES_METRIC,
    EdgeGenerations,
    publish_failures_counter,
)
from f1backfill.generations import Generations
from f1sandbox.fake_cloudflare import FakeCloudflare

WARNING = "cannot publish cache generations to the edge"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cloudflare():
    with FakeCloudflare(token="cf-s3cret-token") as fake:
        yield fake


def publisher(cf: FakeCloudflare, registry: CollectorRegistry | None = None, *,
              token: str | None = None, clock: Clock | None = None,
              timeout: float = 2.0) -> EdgeGenerations:
    return EdgeGenerations(cf.account, cf.namespace, token or cf.token, base_url=cf.base_url,
                           registry=registry, clock=clock or Clock(), timeout=timeout)


def a_yacht() -> str:
    return str(uuid.uuid4())


def failures(registry: CollectorRegistry) -> float:
    return registry.get_sample_value(PUBLISH_FAILURES_METRIC) or 0.0


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "f1backfill.edgekv" and r.levelno == logging.WARNING]


def test_a_publish_writes_the_yachts_generation_key(cloudflare):
    yacht = a_yacht()
    assert publisher(cloudflare).publish(yacht, 7) is True
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "7"
    (write,) = cloudflare.writes
    assert write.authorized and write.account == cloudflare.account


def test_nothing_is_published_unless_all_three_settings_are_given(cloudflare):
    for missing in range(3):
        ids = [cloudflare.account, cloudflare.namespace, cloudflare.token]
        ids[missing] = ""
        edge = EdgeGenerations(*ids, base_url=cloudflare.base_url)
        assert not edge.enabled
        assert edge.publish(a_yacht(), 1) is False
        edge.flush()
    assert cloudflare.writes == []


def test_a_refused_token_is_counted_logged_once_and_never_logged_itself(cloudflare, caplog):
    registry, clock = CollectorRegistry(), Clock()
    edge = publisher(cloudflare, registry, token="wrong-s3cret", clock=clock)
    caplog.set_level(logging.DEBUG)
    for generation in range(1, 4):
        assert edge.publish(a_yacht(), generation) is False  # never raises
        clock.now += OUTAGE_PAUSE_SECONDS
    assert failures(registry) == 3
    (warning,) = warnings_logged(caplog)
    assert "HTTP 403" in warning and "Authentication error" in warning
    assert "s3cret" not in caplog.text and "cf-s3cret" not in caplog.text


def test_an_outage_is_logged_once_and_its_end_once(cloudflare, caplog):
    registry, clock = CollectorRegistry(), Clock()
    edge = publisher(cloudflare, registry, clock=clock)
    caplog.set_level(logging.INFO, logger="f1backfill.edgekv")
    cloudflare.fail_next(2, 503)
    yacht = a_yacht()
    assert edge.publish(yacht, 1) is False
    # Within the pause nothing is attempted: a Cloudflare outage costs one timeout per pause.
    assert edge.publish(yacht, 2) is False
    assert len(cloudflare.writes) == 1
    clock.now += OUTAGE_PAUSE_SECONDS
    assert edge.publish(yacht, 3) is False
    clock.now += OUTAGE_PAUSE_SECONDS
    assert edge.publish(yacht, 4) is True
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "4"
    assert failures(registry) == 2
    assert len(warnings_logged(caplog)) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "Cloudflare answers again: cache generations reach the edge's KV"]


def test_an_unreachable_or_hanging_api_fails_within_the_timeout(cloudflare):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = CollectorRegistry()
    failed = publish_failures_counter(registry)
    nowhere = EdgeGenerations(cloudflare.account, cloudflare.namespace, cloudflare.token,
                              base_url=f"http://127.0.0.1:{port}/client/v4", failures=failed)
    assert nowhere.publish(a_yacht(), 1) is False
    cloudflare.hang_seconds = 2.0
    hanging = EdgeGenerations(cloudflare.account, cloudflare.namespace, cloudflare.token,
                              base_url=cloudflare.base_url, failures=failed, timeout=0.3)
    started = time.monotonic()
    assert hanging.publish(a_yacht(), 1) is False
    assert time.monotonic() - started < 1.5
    assert failures(registry) == 2


def test_one_write_a_second_per_yacht_and_flush_writes_what_was_held_back(cloudflare):
    clock = Clock()
    edge = publisher(cloudflare, clock=clock)
    yacht, other = a_yacht(), a_yacht()
    assert edge.publish(yacht, 1) is True
    assert edge.publish(yacht, 2) is False  # within a second of the last write
    assert edge.publish(other, 1) is True  # another key
    assert edge.publish(yacht, 3) is False
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "1"
    clock.now += MIN_INTERVAL_SECONDS
    assert edge.publish(yacht, 4) is True
    assert edge.publish(yacht, 5) is False
    edge.flush()  # the worker's exit
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "5"
    assert [w.value for w in cloudflare.writes if w.key == f"gen:{yacht}"] == ["1", "4", "5"]
    edge.flush()  # nothing new: nothing written
    assert len(cloudflare.writes) == 4


def test_a_late_lower_generation_never_replaces_a_higher_one(cloudflare):
    clock = Clock()
    edge = publisher(cloudflare, clock=clock)
    yacht = a_yacht()
    assert edge.publish(yacht, 6) is True
    clock.now += MIN_INTERVAL_SECONDS
    assert edge.publish(yacht, 5) is False  # a lane that bumped earlier, publishing later
    edge.flush()
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "6"
    assert len(cloudflare.writes) == 1


def test_each_bump_in_redis_is_published_with_its_value(cloudflare, redis_url):
    clock = Clock()
    yacht = a_yacht()
    with Generations(redis_url, edge=publisher(cloudflare, clock=clock)) as generations:
        for _ in range(3):
            generations.bump(yacht)
            clock.now += MIN_INTERVAL_SECONDS
        assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "3"
        assert generations.bump(yacht) == 4
        assert generations.bump(yacht) == 5  # held back: within a second
        assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "4"
    # close() wrote what was held back: the edge ends where Redis does.
    assert cloudflare.value(cloudflare.namespace, f"gen:{yacht}") == "5"


def test_a_failed_bump_publishes_nothing(cloudflare):
    with Generations("unix:///nonexistent/redis.sock", edge=publisher(cloudflare)) as gens:
        assert gens.bump(a_yacht()) is None
    assert cloudflare.writes == []


def test_the_publisher_never_shows_its_token(cloudflare):
    assert "cf-s3cret" not in repr(publisher(cloudflare))
