"""Turns one claimed batch into outcomes: vectors, dead letters, retries, releases.

Rows are packed into as few requests as the provider's caps allow; each request waits for
the circuit breaker and the rate limiter, and its failure is handled by the policy of its
kind (policy.py):
- 429: wait as told and resend; the rows are not charged an attempt;
- 400 / 'request too large': bisect until the refused row stands alone, dead-letter it;
- 5xx, timeouts, unreadable responses, exhausted quota: charge the rows an attempt, back
  off, resend, and dead-letter rows that run out of attempts;
- 401/403: nothing a row did; stop the worker (AuthFailed propagates).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import Cancelled, ProviderError
from . import providers as p
from .breaker import CircuitBreaker
from .metrics import WorkerMetrics
from .policy import HANDLED, Policy, Then, policy_for
from .queue import ClaimedRow, Failure
from .ratelimit import RateLimiter, Reservation, retry_after_seconds
from .textprep import (
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
    TokenEstimator,
    clean,
)

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Item:
    row: ClaimedRow
    text: str
    tokens: int


@dataclass
class Outcome:
    done: list[tuple[ClaimedRow, np.ndarray]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # to the dead-letter table
    retries: list[tuple[Failure, float]] = field(default_factory=list)  # requeue after delay
    unsent: list[ClaimedRow] = field(default_factory=list)  # release untouched


class Embedder:
    def __init__(
        self,
        provider: p.EmbeddingProvider,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        estimator: TokenEstimator,
        metrics: WorkerMetrics,
        *,
        yacht_id: str,
        dimensions: int,
        max_chars: int,
        max_attempts: int,
        backoff_seconds: float,
        cancelled: threading.Event,
    ) -> None:
        self.provider = provider
        self.limiter = limiter
        self.breaker = breaker
        self.estimator = estimator
        self.metrics = metrics
        self.yacht_id = yacht_id
        self.dimensions = dimensions
        self.max_chars = max_chars
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.cancelled = cancelled

    # -- planning ------------------------------------------------------------------------
    def prepare(self, rows: list[ClaimedRow], outcome: Outcome) -> list[Item]:
        """Clean texts; rows that can never succeed are dead-lettered here, unsent."""
        items = []
        per_input_chars = self.estimator.max_chars_for(int(MAX_TOKENS_PER_INPUT * 0.9))
        for row in rows:
            if row.attempts >= self.max_attempts:
                # Only a reclaimed row (its worker died holding it) arrives like this.
                outcome.failures.append(Failure(
                    row, "lease_expired", "worker lost while holding the row (lease expired)"))
                continue
            text = clean(row.search_text, min(self.max_chars, per_input_chars))
            # Only the cleaned copy is needed from here on; holding both doubles a lane's
            # memory with 24,000-character texts.
            row.search_text = ""
            if not text:
                outcome.failures.append(Failure(row, "empty_text", "no text left after cleaning"))
                continue
            items.append(Item(row, text, self.estimator.estimate(text)))
        return items

    def pack(self, items: list[Item]) -> list[list[Item]]:
        """Greedy packing into requests under the input-count and token caps."""
        cap = min(MAX_TOKENS_PER_REQUEST, self.limiter.max_request_tokens)
        requests: list[list[Item]] = []
        current: list[Item] = []
        tokens = 0
        for item in items:
            if current and (len(current) >= MAX_INPUTS_PER_REQUEST or tokens + item.tokens > cap):
                requests.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += item.tokens
        if current:
            requests.append(current)
        return requests

    # -- running -------------------------------------------------------------------------
    def embed(self, rows: list[ClaimedRow]) -> Outcome:
        outcome = Outcome()
        requests = self.pack(self.prepare(rows, outcome))
        for index, request in enumerate(requests):
            try:
                self._send(request, outcome)
            except Cancelled:
                for rest in requests[index:]:
                    outcome.unsent.extend(i.row for i in rest if not self._settled(i, outcome))
                break
        return outcome

    @staticmethod
    def _settled(item: Item, outcome: Outcome) -> bool:
        row = item.row
        return (any(r is row for r, _ in outcome.done)
                or any(f.row is row for f in outcome.failures)
                or any(f.row is row for f, _ in outcome.retries))

    def _send(self, items: list[Item], outcome: Outcome) -> None:
        failures = 0  # failed attempts of these rows in this call, for the backoff
        while items:
            self.breaker.before_request(self.cancelled)
            reservation = self.limiter.acquire(sum(i.tokens for i in items), self.cancelled)
            reservation.sent_at = time.monotonic()
            try:
                with self.metrics.latency.time():
                    result = self.provider.embed([i.text for i in items])
            except HANDLED as exc:
                policy = policy_for(exc)
                self._account_for(policy, exc, reservation)
                match policy.then:
                    case Then.RESEND:
                        pass  # the same rows, once the limiter lets them through
                    case Then.BISECT:
                        self._bisect(items, exc, outcome)
                        return
                    case Then.BACK_OFF:
                        failures += 1
                        items = self._back_off(items, exc, failures, outcome)
                    case Then.STOP:
                        raise
            else:
                self._accept(items, result, reservation, outcome)
                return

    def _account_for(self, policy: Policy, exc: ProviderError,
                     reservation: Reservation) -> None:
        """A failed request in the limiter, the breaker and the metrics, as `policy` says."""
        self.limiter.settle(reservation, reservation.tokens if policy.keep_estimate else None,
                            exc.headers if policy.retry_after else None)
        if policy.retry_after:
            self.limiter.pause(retry_after_seconds(exc.headers))
        if policy.breaker is not None:
            policy.breaker(self.breaker)
        self.metrics.requests.labels(policy.status).inc()

    def _bisect(self, items: list[Item], exc: ProviderError, outcome: Outcome) -> None:
        """Send each half on its own until the refused row stands alone: a dead letter."""
        if len(items) == 1:
            outcome.failures.append(Failure(items[0].row, "invalid_input", str(exc)))
            return
        middle = len(items) // 2
        self._send(items[:middle], outcome)
        self._send(items[middle:], outcome)

    def _back_off(self, items: list[Item], exc: ProviderError, failures: int,
                  outcome: Outcome) -> list[Item]:
        """Charge the rows an attempt and wait; returns the rows to send again.

        Rows out of attempts are dead-lettered. If the worker stops during the wait, the
        rest go back to the queue as retries and nothing is returned.
        """
        items = self._charge(items, exc, outcome)
        if not items:
            return []
        delay = self._delay(failures)
        log.warning("request of %d rows failed (%s: %s); retrying in %.1fs",
                    len(items), exc.code, exc, delay)
        if self.cancelled.wait(delay):
            outcome.retries.extend((Failure(i.row, exc.code, str(exc)), 0.0) for i in items)
            return []
        return items

    def _accept(self, items: list[Item], result: p.EmbedResult, reservation: Reservation,
                outcome: Outcome) -> None:
        tokens = result.tokens if result.tokens is not None else reservation.tokens
        self.limiter.settle(reservation, tokens, result.headers)
        self.estimator.observe(sum(len(i.text) for i in items), tokens)
        self.breaker.record_success()
        self.metrics.requests.labels("success").inc()
        self.metrics.tokens.inc(tokens)
        for item, vector in zip(items, result.vectors, strict=True):
            if vector.shape != (self.dimensions,):
                outcome.failures.append(Failure(
                    item.row, "wrong_dimension",
                    f"provider returned {vector.shape[0]} dimensions, expected {self.dimensions}"))
            elif not np.isfinite(vector).all():
                outcome.failures.append(Failure(item.row, "bad_response", "non-finite vector"))
            else:
                outcome.done.append((item.row, vector))

    def _charge(self, items: list[Item], exc: ProviderError, outcome: Outcome) -> list[Item]:
        """One more attempt for each row; rows out of attempts are dead-lettered, the
        others returned."""
        left = []
        for item in items:
            item.row.attempts += 1
            if item.row.attempts >= self.max_attempts:
                outcome.failures.append(Failure(item.row, exc.code, str(exc)))
            else:
                left.append(item)
        return left

    def _delay(self, failures: int) -> float:
        base = self.backoff_seconds * 2 ** (failures - 1)
        # Full jitter keeps lanes (and workers) from retrying in lockstep.
        return min(MAX_BACKOFF_SECONDS, base) * random.uniform(0.5, 1.0)
