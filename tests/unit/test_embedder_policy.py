"""The embedder's failure policies: the table itself, what applying a policy does to the rate
limiter, the circuit breaker and the metrics (on a fake clock), and what happens to the
rows, with a scripted provider in place of the API."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from f1backfill import errors
from f1backfill.errors import (
    AuthFailed,
    BadResponse,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RequestTooLarge,
)
from f1backfill.worker.breaker import BreakerState, CircuitBreaker
from f1backfill.worker.embedder import Embedder
from f1backfill.worker.metrics import WorkerMetrics
from f1backfill.worker.policy import POLICIES, Policy, Then, policy_for
from f1backfill.worker.providers import EmbedResult
from f1backfill.worker.queue import ClaimedRow
from f1backfill.worker.ratelimit import RateLimiter
from f1backfill.worker.textprep import TokenEstimator
from tests.support.clock import FakeClock

DIMENSIONS = 8
NO_WAIT = {"retry-after": "0"}


class Scripted:
    """A provider whose answer to each request is decided by `answer(texts)`: an error to
    raise, or None for unit vectors."""

    name = "scripted"

    def __init__(self, answer: Callable[[list[str]], ProviderError | None]) -> None:
        self.answer = answer
        self.requests: list[list[str]] = []

    def embed(self, texts: list[str]) -> EmbedResult:
        self.requests.append(texts)
        error = self.answer(texts)
        if error is not None:
            raise error
        vector = np.zeros(DIMENSIONS, dtype=np.float32)
        vector[0] = 1.0
        return EmbedResult(vectors=[vector] * len(texts), tokens=len(texts))

    def close(self) -> None:
        pass


def embedder(provider, *, limiter=None, breaker=None, max_attempts=3,
             cancelled=None) -> Embedder:
    return Embedder(
        provider, limiter or RateLimiter(6000, 10**9, clock=FakeClock()),
        breaker or CircuitBreaker(100, 60, clock=FakeClock()), TokenEstimator(), WorkerMetrics(),
        yacht_id=str(uuid.uuid4()), dimensions=DIMENSIONS, max_chars=1000,
        max_attempts=max_attempts, backoff_seconds=0.0,
        cancelled=cancelled or threading.Event())


def rows(*texts: str) -> list[ClaimedRow]:
    return [ClaimedRow(n, "work_order", uuid.uuid4(), text, 0, f"hash{n}")
            for n, text in enumerate(texts)]


def requests(e: Embedder, status: str) -> float:
    value = e.metrics.registry.get_sample_value("f1_openai_requests_total", {"status": status})
    return value or 0.0


# --- The table -------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "expected"), [
    (RateLimited, Policy(
        "rate_limited", Then.RESEND, CircuitBreaker.record_neutral, retry_after=True)),
    (InvalidInput, Policy("invalid_input", Then.BISECT, CircuitBreaker.record_success)),
    (RequestTooLarge, Policy("invalid_input", Then.BISECT, CircuitBreaker.record_neutral)),
    (AuthFailed, Policy("error", Then.STOP, CircuitBreaker.record_neutral)),
    (ProviderUnavailable, Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_failure, keep_estimate=True)),
    (ProviderTimeout, Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_failure, keep_estimate=True)),
    (BadResponse, Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_failure, keep_estimate=True)),
    (QuotaExhausted, Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_neutral, keep_estimate=True)),
])
def test_each_provider_error_maps_to_its_policy(error, expected):
    assert policy_for(error("refused")) == expected


def test_every_provider_error_class_has_a_policy():
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, ProviderError) and c is not ProviderError]
    assert len(classes) >= 8
    for cls in classes:
        assert isinstance(policy_for(cls("x")), Policy), cls.__name__


def test_only_a_429_honours_retry_after_and_only_what_may_have_been_counted_keeps_it():
    assert [c for c, p in POLICIES.items() if p.retry_after] == [RateLimited]
    assert {c for c, p in POLICIES.items() if p.keep_estimate} == {
        ProviderUnavailable, QuotaExhausted}


# --- Applying a policy: limiter, breaker, metrics ---------------------------------------------


HEADERS = {"retry-after": "7", "x-ratelimit-remaining-tokens": "100",
           "x-ratelimit-remaining-requests": "5"}


def applied(error: type[ProviderError], breaker: CircuitBreaker | None = None):
    """A 1,000-token request against a 60 requests / 6,000 tokens budget fails with `error`
    (carrying HEADERS); returns the embedder after its policy was applied."""
    clock = FakeClock()
    limiter = RateLimiter(60, 6000, clock=clock)
    e = embedder(Scripted(lambda _: None), limiter=limiter,
                 breaker=breaker or CircuitBreaker(100, 60, clock=clock))
    reservation = limiter.acquire(1000)
    reservation.sent_at = clock.now
    exc = error("refused", HEADERS)
    e._account_for(policy_for(exc), exc, reservation)
    return e


@pytest.mark.parametrize("error", [InvalidInput, RequestTooLarge, AuthFailed])
def test_a_refused_request_gives_its_reservation_back_whole(error):
    snapshot = applied(error).limiter.snapshot()
    assert snapshot == {"requests": 60, "tokens": 6000, "paused_for": 0.0}


@pytest.mark.parametrize("error", [ProviderUnavailable, ProviderTimeout, QuotaExhausted])
def test_a_request_the_provider_may_have_counted_keeps_its_estimate_spent(error):
    snapshot = applied(error).limiter.snapshot()
    assert snapshot == {"requests": 59, "tokens": 5000, "paused_for": 0.0}


def test_a_429_gives_the_reservation_back_then_follows_the_headers_and_pauses():
    snapshot = applied(RateLimited).limiter.snapshot()
    # Given back (6,000 tokens, 60 requests), then pulled down to what the provider says
    # is left, and every lane waits out retry-after.
    assert snapshot == {"requests": 5, "tokens": 100, "paused_for": 7.0}


@pytest.mark.parametrize(("error", "failures", "state"), [
    (InvalidInput, 0, BreakerState.CLOSED),
    (ProviderUnavailable, 3, BreakerState.OPEN),
    (BadResponse, 3, BreakerState.OPEN),
    (RateLimited, 2, BreakerState.CLOSED),
    (RequestTooLarge, 2, BreakerState.CLOSED),
    (AuthFailed, 2, BreakerState.CLOSED),
    (QuotaExhausted, 2, BreakerState.CLOSED),
])
def test_what_the_breaker_records(error, failures, state):
    breaker = CircuitBreaker(3, 60, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    applied(error, breaker)
    assert (breaker.consecutive_failures, breaker.state) == (failures, state)


@pytest.mark.parametrize("error", [RateLimited, RequestTooLarge, AuthFailed, QuotaExhausted])
def test_a_neutral_verdict_frees_the_half_open_probe(error):
    clock = FakeClock()
    breaker = CircuitBreaker(1, 60, clock=clock)
    breaker.record_failure()
    clock.now += 60
    breaker.before_request()  # the probe, whose request fails with `error`
    applied(error, breaker)
    assert breaker.state is BreakerState.HALF_OPEN
    prober = threading.Thread(target=breaker.before_request, daemon=True)
    prober.start()
    prober.join(timeout=2)
    assert not prober.is_alive()  # the next caller became the probe at once


@pytest.mark.parametrize(("error", "status"), [
    (RateLimited, "rate_limited"), (InvalidInput, "invalid_input"),
    (RequestTooLarge, "invalid_input"), (AuthFailed, "error"),
    (ProviderUnavailable, "error"), (ProviderTimeout, "error"), (BadResponse, "error"),
    (QuotaExhausted, "error"),
])
def test_each_failure_is_counted_once_under_its_status(error, status):
    e = applied(error)
    assert requests(e, status) == 1
    total = sum(requests(e, s) for s in ("success", "rate_limited", "invalid_input", "error"))
    assert total == 1


# --- What happens to the rows ---------------------------------------------------------------


def test_a_429_resends_the_same_rows_without_charging_them():
    answers = iter([RateLimited("slow down", NO_WAIT)])
    e = embedder(Scripted(lambda _: next(answers, None)))
    claimed = rows("one", "two")
    outcome = e.embed(claimed)
    assert [r for r, _ in outcome.done] == claimed
    assert [r.attempts for r in claimed] == [0, 0]
    assert e.provider.requests == [["one", "two"]] * 2


def test_a_refused_row_is_bisected_out_and_dead_lettered_as_invalid_input():
    e = embedder(Scripted(lambda texts: InvalidInput("no") if "BAD" in texts else None))
    outcome = e.embed(rows("a", "b", "BAD", "c"))
    assert [r.job_id for r, _ in outcome.done] == [0, 1, 3]
    assert [(f.row.job_id, f.code) for f in outcome.failures] == [(2, "invalid_input")]
    assert [r.attempts for r, _ in outcome.done] == [0, 0, 0]
    # 4 rows, then 2 + 2, then the half holding BAD as 1 + 1.
    assert [len(t) for t in e.provider.requests] == [4, 2, 2, 1, 1]


def test_a_request_too_large_is_split_until_it_passes():
    e = embedder(Scripted(lambda texts: RequestTooLarge("too big") if len(texts) > 2 else None))
    outcome = e.embed(rows("a", "b", "c", "d", "e"))
    assert len(outcome.done) == 5 and not outcome.failures
    # 5 refused; 2 pass; 3 refused; 1 and 2 pass.
    assert requests(e, "invalid_input") == 2
    assert [len(t) for t in e.provider.requests] == [5, 2, 3, 1, 2]


def test_a_single_row_too_large_is_dead_lettered_as_invalid_input():
    e = embedder(Scripted(lambda _: RequestTooLarge("too big")))
    outcome = e.embed(rows("huge"))
    assert [f.code for f in outcome.failures] == ["invalid_input"]


def test_an_auth_failure_stops_with_the_rows_uncharged():
    e = embedder(Scripted(lambda _: AuthFailed("401: bad key")))
    claimed = rows("one", "two")
    with pytest.raises(AuthFailed):
        e.embed(claimed)
    assert [r.attempts for r in claimed] == [0, 0]


@pytest.mark.parametrize(("error", "code", "breaker_failures"), [
    (ProviderUnavailable, "provider_error", 3),
    (ProviderTimeout, "timeout", 3),
    (BadResponse, "bad_response", 3),
    (QuotaExhausted, "rate_limit", 0),
])
def test_failures_that_back_off_charge_each_attempt_then_dead_letter(error, code,
                                                                      breaker_failures):
    e = embedder(Scripted(lambda _: error("down")), max_attempts=3)
    claimed = rows("one", "two")
    outcome = e.embed(claimed)
    assert [(f.row.attempts, f.code) for f in outcome.failures] == [(3, code), (3, code)]
    assert not outcome.retries and not outcome.done
    assert len(e.provider.requests) == 3
    assert e.breaker.consecutive_failures == breaker_failures


def test_a_row_with_attempts_left_is_resent_alone():
    claimed = rows("fresh", "tired")
    claimed[1].attempts = 2  # one more failure dead-letters it
    answers = iter([ProviderUnavailable("503")])
    e = embedder(Scripted(lambda _: next(answers, None)), max_attempts=3)
    outcome = e.embed(claimed)
    assert [(f.row.job_id, f.code) for f in outcome.failures] == [(1, "provider_error")]
    assert [r.job_id for r, _ in outcome.done] == [0]
    assert e.provider.requests == [["fresh", "tired"], ["fresh"]]


def test_a_stop_during_the_backoff_returns_the_rows_as_retries():
    stop = threading.Event()

    def fail_and_stop(_):
        stop.set()
        return ProviderUnavailable("503")

    e = embedder(Scripted(fail_and_stop), cancelled=stop)
    claimed = rows("one", "two")
    outcome = e.embed(claimed)
    assert [(f.row.attempts, f.code, delay) for f, delay in outcome.retries] == [
        (1, "provider_error", 0.0), (1, "provider_error", 0.0)]
    assert not outcome.failures and not outcome.done
