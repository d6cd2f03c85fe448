"""The client-side limiter mirrors the provider's buckets, on a fake clock."""

import threading

import pytest

from f1backfill.errors import Cancelled
from f1backfill.worker.ratelimit import (
    RateLimiter,
    parse_duration,
    retry_after_seconds,
)
from tests.support.clock import FakeClock


def test_acquire_takes_from_both_buckets_and_refills_at_the_per_minute_rate():
    clock = FakeClock()
    limiter = RateLimiter(60, 6000, clock=clock)
    limiter.acquire(6000)
    assert limiter.snapshot()["tokens"] == pytest.approx(0)
    assert limiter.snapshot()["requests"] == pytest.approx(59)
    clock.now += 1  # 6000 tokens/min = 100/s
    assert limiter.snapshot()["tokens"] == pytest.approx(100)


def test_acquire_blocks_until_tokens_refill():
    clock = FakeClock()
    limiter = RateLimiter(600, 600, burst_seconds=1, clock=clock)  # 10 tokens, 10/s
    limiter.acquire(10)
    got = threading.Event()
    thread = threading.Thread(target=lambda: (limiter.acquire(5), got.set()))
    thread.start()
    assert not got.wait(0.2)
    clock.now += 0.6  # 6 tokens refilled
    assert got.wait(2)
    thread.join()


def test_a_request_larger_than_the_bucket_is_capped_to_capacity():
    limiter = RateLimiter(60, 600, burst_seconds=60, clock=FakeClock())
    reservation = limiter.acquire(10_000)
    assert reservation.tokens == 600


def test_settle_replaces_the_estimate_with_the_counted_tokens():
    limiter = RateLimiter(60, 6000, clock=FakeClock())
    reservation = limiter.acquire(1000)
    limiter.settle(reservation, 400)
    assert limiter.snapshot()["tokens"] == pytest.approx(5600)
    limiter.settle(reservation, 400)  # settling twice changes nothing
    assert limiter.snapshot()["tokens"] == pytest.approx(5600)


def test_settle_without_a_count_refunds_request_and_tokens():
    limiter = RateLimiter(60, 6000, clock=FakeClock())
    reservation = limiter.acquire(1000)
    limiter.settle(reservation, None)
    snap = limiter.snapshot()
    assert snap["tokens"] == pytest.approx(6000)
    assert snap["requests"] == pytest.approx(60)


def test_pause_holds_every_acquire_until_it_ends():
    clock = FakeClock()
    limiter = RateLimiter(60, 6000, clock=clock)
    limiter.pause(5)
    got = threading.Event()
    thread = threading.Thread(target=lambda: (limiter.acquire(1), got.set()))
    thread.start()
    assert not got.wait(0.2)
    clock.now += 5
    assert got.wait(2)
    thread.join()


def test_cancelled_wait_raises_promptly():
    limiter = RateLimiter(60, 10, burst_seconds=60, clock=FakeClock())
    limiter.acquire(10)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        limiter.acquire(10, cancel)


def test_headers_lower_the_level_only_when_someone_else_spends_the_account():
    clock = FakeClock()
    limiter = RateLimiter(600, 60_000, clock=clock)
    reservation = limiter.acquire(1000)
    sent_at = clock.now
    clock.now += 0.1
    limiter.settle(reservation, 1000)
    # The provider agrees with us (59,000 left, plus what it refilled): no change.
    limiter.observe_headers({"x-ratelimit-remaining-tokens": "59000"}, sent_at)
    assert limiter.snapshot()["tokens"] == pytest.approx(59_100)
    # The provider has far less: another client spends the account.
    limiter.observe_headers({"x-ratelimit-remaining-tokens": "20000"}, sent_at)
    assert limiter.snapshot()["tokens"] == pytest.approx(20_100)


def test_header_limits_below_the_configured_budget_cap_the_buckets():
    limiter = RateLimiter(3000, 1_000_000, clock=FakeClock())
    limiter.observe_headers(
        {"x-ratelimit-limit-tokens": "150000", "x-ratelimit-limit-requests": "500"}
    )
    assert limiter.max_request_tokens == 150_000
    assert limiter.snapshot()["requests"] <= 500


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1.5s", 1.5),
        ("1h2m3s", 3723.0),
        ("", None),
        (None, None),
        ("soon", None),
    ],
)
def test_parse_duration_reads_openai_reset_headers(text, seconds):
    assert parse_duration(text) == (None if seconds is None else pytest.approx(seconds))


def test_retry_after_prefers_milliseconds_then_seconds_then_resets():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds(
        {"x-ratelimit-reset-tokens": "300ms", "x-ratelimit-reset-requests": "2s"}
    ) == pytest.approx(0.3)
    assert retry_after_seconds({}) == 1.0
