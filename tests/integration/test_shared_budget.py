"""The account's shared bucket in Postgres (`provider_budget`, `budget_apply`) and two
workers spending one account against the fake provider, which starts spent."""

from __future__ import annotations

import threading
import time

import pytest

from f1backfill.config import WorkerSettings
from f1backfill.worker.loop import Worker
from f1backfill.worker.ratelimit import Reservation, SharedBucket, account_id
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht, status_counts

KEY = "sk-shared-budget-test-key"
MODEL = "text-embedding-3-small"


def bucket(database_url: str, rpm: float = 600, tpm: float = 60_000) -> SharedBucket:
    return SharedBucket(database_url, account_id(KEY, MODEL), rpm, tpm)


def test_a_new_account_starts_empty_and_the_key_is_never_stored(db, database_url):
    shared = bucket(database_url)
    try:
        assert (shared.level.requests, shared.level.tokens) == (0, 0)
        with db.cursor() as cur:
            cur.execute("SELECT row_to_json(b)::text FROM provider_budget b")
            (row,), = cur.fetchall()
        assert KEY not in row and "shared-budget" not in row
        assert account_id(KEY, MODEL) in row
    finally:
        shared.close()


def test_reservations_refill_by_the_database_clock_and_queue_below_zero(database_url):
    shared = bucket(database_url, rpm=6000, tpm=60_000)  # 100 requests/s, 1,000 tokens/s
    try:
        first, second = Reservation(500), Reservation(500)
        shared.reserve(first, None)  # waits ~0.5 s: the bucket was empty
        assert first.shared is not None and first.shared.tokens == pytest.approx(-500, abs=30)
        started = time.monotonic()
        shared.reserve(second, None)
        # Queued behind the first: ~0.5 s more, not from a full bucket.
        assert 0.35 < time.monotonic() - started < 1.0
        time.sleep(0.3)
        snapshot = shared.snapshot()
        assert snapshot["tokens"] == pytest.approx(300, abs=60)  # refilled, not capped yet
    finally:
        shared.close()


def test_settle_gives_back_and_headers_correct_once(database_url):
    shared = bucket(database_url, rpm=60, tpm=60_000)  # 1 request/s, 1,000 tokens/s
    other = bucket(database_url, rpm=60, tpm=60_000)  # a second worker, same account
    try:
        with shared._conn.cursor() as cur:  # a known start: full
            cur.execute("UPDATE provider_budget SET requests = 60, tokens = 60000, "
                        "updated_at = clock_timestamp()")
        a, b = Reservation(1000), Reservation(1000)
        shared.reserve(a, None)
        other.reserve(b, None)
        a.sent_at, b.sent_at = a.reserved_at, b.reserved_at
        # a: the provider counted 800 and says nothing: 200 come back.
        before = shared.snapshot()["tokens"]
        shared.settle(a, 800, {})
        assert shared.snapshot()["tokens"] == pytest.approx(before + 200, abs=100)
        # b: its headers say someone else spent 20,000 tokens of the account.
        level = other.snapshot()["tokens"]
        seen = b.shared.tokens + 200 - 20_000  # b's reference, a's give-back, the news
        other.settle(b, 1000, {"x-ratelimit-remaining-tokens": str(int(seen)),
                               "x-ratelimit-limit-tokens": "60000"})
        assert other.snapshot()["tokens"] == pytest.approx(level - 20_000, abs=300)
        # The news again, from a response reserved before the correction: nothing moves.
        c = Reservation(0)
        c.shared, c.sent_at, c.reserved_at = b.shared, b.sent_at, b.reserved_at
        level = other.snapshot()["tokens"]
        other.settle(c, 0, {"x-ratelimit-remaining-tokens": str(int(seen))})
        assert other.snapshot()["tokens"] == pytest.approx(level - 20_000 + 20_000, abs=300)
    finally:
        shared.close()
        other.close()


def test_a_lower_limit_in_the_headers_lowers_the_accounts_limit(database_url):
    shared = bucket(database_url, rpm=3000, tpm=1_000_000)
    try:
        reservation = Reservation(10)
        shared.reserve(reservation, None)
        shared.settle(reservation, 10, {"x-ratelimit-limit-requests": "500",
                                        "x-ratelimit-limit-tokens": "150000"})
        assert (shared.requests_per_minute, shared.tokens_per_minute) == (500, 150_000)
    finally:
        shared.close()


def settings_for(database_url, yacht, fake, **overrides) -> WorkerSettings:
    values = dict(
        yacht_id=str(yacht.id), database_url=database_url, provider="openai",
        openai_api_key=KEY, openai_base_url=fake.base_url, prometheus_port=0,
        batch_sleep_sec=0.0, retry_backoff_sec=0.01, request_timeout_sec=5.0,
        requests_per_minute=600, tokens_per_minute=240_000, batch_size=20, max_in_flight=2)
    values.update(overrides)
    return WorkerSettings.from_env({}, **values)


def test_two_workers_on_one_account_get_no_429_and_never_overdraw(db, database_url):
    """The provider starts spent (the previous Job used the account) and allows 4,000
    tokens/s; two workers that each believed they had a full bucket would be refused."""
    yachts = [add_yacht(db, "Shared One"), add_yacht(db, "Shared Two")]
    add_rows(db, yachts[0].id, 80, seed=1)
    add_rows(db, yachts[1].id, 50, seed=2)
    with FakeOpenAI(rpm=600, tpm=240_000, latency=0.02, start_empty=True) as fake:
        # The previous Job left the account spent, and its shared row says so.
        bucket(database_url, rpm=600, tpm=240_000).close()
        workers = [Worker(settings_for(database_url, y, fake, worker_name=f"w{n}"))
                   for n, y in enumerate(yachts)]
        summaries: list = [None, None]

        def run(n: int) -> None:
            summaries[n] = workers[n].run()

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        stats = fake.stats()
    assert [s.exit_code for s in summaries] == [0, 0]
    assert status_counts(db, yachts[0].id) == {"embedded": 80}
    assert status_counts(db, yachts[1].id) == {"embedded": 50}
    assert stats.rate_limited == 0
    # No overdraw: what the provider admitted fits what its bucket allowed from the level
    # at the first request, and both workers were paced by it (the run needed the refill).
    assert stats.tokens_admitted <= stats.allowed_tokens()
    assert stats.tokens_admitted > stats.tokens_at_first_request
