"""The client-side limiter mirrors the provider's buckets, on a fake clock."""

import threading

import pytest

from f1backfill.errors import Cancelled
from f1backfill.worker.ratelimit import (
    RateLimiter,
    Reservation,
    SharedBucket,
    SharedLevel,
    account_id,
    correction,
    parse_duration,
    provider_level,
    refilled,
    retry_after_seconds,
    wait_seconds,
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


# --- The account's shared bucket: its arithmetic -------------------------------------------
# SharedBucket keeps the levels in Postgres (budget_apply, tests/integration/
# test_shared_budget.py); what it computes is these functions.


def test_refill_adds_the_per_minute_rate_and_caps_at_one_minute():
    assert refilled(0, 60_000, 1.5) == pytest.approx(1500)
    assert refilled(59_500, 60_000, 1.0) == 60_000  # clamp: a minute's budget at most
    assert refilled(100, 60_000, -3.0) == 100  # a clock that went back refills nothing


def test_a_level_below_zero_is_budget_promised_and_refills_the_same_way():
    # Two 30,000-token reservations from an empty bucket: the second waits one more second.
    assert wait_seconds(-30_000, 1_800_000) == pytest.approx(1.0)
    assert wait_seconds(-60_000, 1_800_000) == pytest.approx(2.0)
    assert wait_seconds(0, 1_800_000) == 0.0
    assert wait_seconds(5, 1_800_000) == 0.0
    assert refilled(-60_000, 1_800_000, 2.0) == pytest.approx(0)


def test_a_reservation_waits_until_the_refill_pays_for_it():
    # reserve: take first, then wait; what the wait gives back is exactly what was taken.
    level = refilled(0, 600_000, 0.0) - 25_000  # 10,000 tokens/s
    assert wait_seconds(level, 600_000) == pytest.approx(2.5)
    assert refilled(level, 600_000, 2.5) == pytest.approx(0)


def test_settle_gives_back_what_the_provider_did_not_count():
    # Reserved 1,000 (the estimate), the provider counted 800: 200 come back.
    level = -1000.0
    level = min(60_000, level + (1000 - 800))
    assert level == -800


def test_the_provider_level_is_remaining_refined_by_the_reset_within_one_unit():
    # 3,000/min = 50/s; 10.4 requests missing take 208 ms to refill.
    assert provider_level(2989, parse_duration("208ms"), 3000) == pytest.approx(2989.6)
    assert provider_level(2989, None, 3000) == 2989
    assert provider_level(None, parse_duration("1s"), 3000) is None
    # A reset that disagrees (another burst size) never moves it past the next unit...
    assert provider_level(4, parse_duration("100ms"), 3000) == 5
    # ... nor below what remaining says.
    assert provider_level(10, parse_duration("59.9s"), 3000) == 10


def test_a_correction_is_zero_when_the_provider_agrees():
    # Reserved at -2,000; sent 0.5 s later, the provider saw 5,000 more refilled: -2,000 +
    # 10,000/s * 0.5 s = 3,000 left after our request, which is what it says.
    assert correction(-2000, 0.5, 600_000, 3000) == pytest.approx(0)


def test_a_correction_takes_what_someone_else_spent_and_counts_the_refill_once():
    # The provider has 4,000 tokens less than we predicted: someone else spent them.
    assert correction(-2000, 0.5, 600_000, -1000) == pytest.approx(-4000)
    # Without `since`, the refill until the request was sent would be counted twice.
    assert correction(-2000, 0.0, 600_000, 3000) == pytest.approx(5000)


def test_a_correction_already_applied_since_the_reservation_is_not_applied_again():
    # Four responses bring the same news (the provider has 30 requests less); the first
    # corrects, the next three find the adjustment already made.
    first = correction(35, 0.0, 600, 5)
    assert first == pytest.approx(-30)
    assert correction(34, 0.0, 600, 4, adjusted_since=first) == pytest.approx(0)


def test_a_correction_projects_the_reference_with_the_clamp():
    # Reserved at 59,000 of 60,000, sent 10 s later: the bucket was full (clamped), not
    # at 69,000.
    assert correction(59_000, 10.0, 60_000, 60_000) == pytest.approx(0)


def test_the_account_is_a_hash_of_key_and_model_never_the_key():
    key = "sk-proj-abcdef0123456789"
    account = account_id(key, "text-embedding-3-small")
    assert key not in account and "abcdef" not in account
    assert len(account) == 64 and int(account, 16) >= 0
    assert account == account_id(key, "text-embedding-3-small")
    assert account != account_id(key, "text-embedding-3-large")
    assert account != account_id(key + "x", "text-embedding-3-small")


class RecordingShared:
    """A SharedBucket stand-in: records what the limiter asks of it."""

    def __init__(self, cancelled_while_waiting: bool = False) -> None:
        self.calls: list[tuple] = []
        self.cancelled_while_waiting = cancelled_while_waiting

    def reserve(self, reservation, cancelled):
        self.calls.append(("reserve", reservation.tokens))
        reservation.shared = object()
        if self.cancelled_while_waiting:
            raise Cancelled()

    def settle(self, reservation, actual, headers):
        if reservation.shared is None:
            return
        reservation.shared = None
        self.calls.append(("settle", reservation.tokens, actual, dict(headers)))


def test_with_a_shared_bucket_every_request_reserves_and_settles_there_too():
    clock = FakeClock()
    limiter = RateLimiter(600, 60_000, clock=clock)
    shared = RecordingShared()
    limiter.attach(shared)
    reservation = limiter.acquire(1000)
    headers = {"x-ratelimit-remaining-tokens": "10"}
    limiter.settle(reservation, 900, headers)
    limiter.settle(reservation, 900, headers)  # twice: once
    assert shared.calls == [("reserve", 1000), ("settle", 1000, 900, headers)]
    # The headers correct the shared bucket, not the worker's own cap.
    assert limiter.snapshot()["tokens"] == pytest.approx(59_100)
    # The account's limits still cap it, so no request is packed larger than the account.
    limiter.settle(limiter.acquire(10), 10, {"x-ratelimit-limit-tokens": "20000"})
    assert limiter.max_request_tokens == 20_000


def test_a_wait_for_the_shared_bucket_cancelled_gives_everything_back():
    limiter = RateLimiter(600, 60_000, clock=FakeClock())
    shared = RecordingShared(cancelled_while_waiting=True)
    limiter.attach(shared)
    with pytest.raises(Cancelled):
        limiter.acquire(1000, threading.Event())
    assert shared.calls == [("reserve", 1000), ("settle", 1000, None, {})]
    assert limiter.snapshot()["tokens"] == pytest.approx(60_000)


def test_headers_that_say_not_known_are_ignored():
    """Azure's OpenAI has answered limit -1, remaining -1, reset 0: no news, not an empty
    account of capacity -1."""
    unknown = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1",
               "x-ratelimit-reset-tokens": "0", "x-ratelimit-limit-requests": "-1",
               "x-ratelimit-remaining-requests": "-1", "x-ratelimit-reset-requests": "0"}
    limiter = RateLimiter(600, 60_000, clock=FakeClock())
    limiter.observe_headers(unknown)
    assert limiter.max_request_tokens == 60_000
    assert limiter.snapshot()["tokens"] == pytest.approx(60_000)
    # The shared bucket reads them the same way: nothing to correct, no limit to lower.
    view = SharedBucket.headers_view(Reservation(10, sent_at=1.0, reserved_at=1.0),
                                     SharedLevel(0, 0, 600, 60_000, 0, 0, 0, 0), unknown)
    assert all(value is None for value in view.values()), view
