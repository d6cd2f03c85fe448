"""Client-side pacing under requests/min and tokens/min, before the provider says 429.

OpenAI's limiter behaves like two token buckets (requests and tokens) holding one minute of
budget and refilling continuously; this mirrors them. A request reserves its estimated
tokens before it is sent, and `settle` corrects the bucket with the tokens the provider
reported in `usage`, so estimation errors do not accumulate. The provider's
`x-ratelimit-remaining-*` headers pull the buckets down when someone else spends the same
account, and a 429's `retry-after` pauses every lane.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import Cancelled


@dataclass
class Reservation:
    tokens: int
    settled: bool = False


class _Bucket:
    def __init__(self, per_minute: float, capacity: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity

    def refill(self, elapsed: float) -> None:
        self.level = min(self.capacity, self.level + elapsed * self.rate)

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds `amount`."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        *,
        burst_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        fill = burst_seconds / 60.0
        self._requests = _Bucket(requests_per_minute, max(1.0, requests_per_minute * fill))
        self._tokens = _Bucket(tokens_per_minute, max(1.0, tokens_per_minute * fill))
        self._last = clock()
        self._paused_until = 0.0
        self._in_flight_tokens = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._requests.refill(elapsed)
            self._tokens.refill(elapsed)
            self._last = now
        return now

    @property
    def max_request_tokens(self) -> int:
        """The largest request that can ever pass: the token bucket's capacity."""
        return int(self._tokens.capacity)

    def snapshot(self) -> dict[str, float]:
        with self._cond:
            self._refill()
            return {
                "requests": self._requests.level,
                "tokens": self._tokens.level,
                "paused_for": max(0.0, self._paused_until - self._clock()),
            }

    # -- the API the embedder uses -------------------------------------------------------
    def acquire(self, tokens: int, cancelled: threading.Event | None = None) -> Reservation:
        """Block until one request of `tokens` fits both budgets, then take it."""
        tokens = min(int(tokens), self.max_request_tokens)
        with self._cond:
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                now = self._refill()
                delay = max(
                    self._paused_until - now,
                    self._requests.wait_for(1),
                    self._tokens.wait_for(tokens),
                )
                if delay <= 0:
                    self._requests.level -= 1
                    self._tokens.level -= tokens
                    self._in_flight_tokens += tokens
                    return Reservation(tokens)
                # Waiting on the condition lets a settle() or a header update wake us early;
                # the cap keeps a cancelled wait prompt.
                self._cond.wait(timeout=min(delay, 0.5))

    def settle(self, reservation: Reservation, actual_tokens: int | None) -> None:
        """The request finished: replace its estimate with what the provider counted.

        `actual_tokens=None` means the provider did not count it (refused with 429/400 before
        processing): the reservation is given back whole.
        """
        with self._cond:
            if reservation.settled:
                return
            reservation.settled = True
            self._refill()
            self._in_flight_tokens -= reservation.tokens
            if actual_tokens is None:
                self._requests.level = min(self._requests.capacity, self._requests.level + 1)
                self._tokens.level = min(
                    self._tokens.capacity, self._tokens.level + reservation.tokens
                )
            else:
                self._tokens.level = min(
                    self._tokens.capacity,
                    self._tokens.level + reservation.tokens - actual_tokens,
                )
            self._cond.notify_all()

    def observe_headers(self, headers: Mapping[str, str], sent_at: float | None = None) -> None:
        """Align with the provider's view after a response to a request sent at `sent_at`.

        The header counts were taken when the provider admitted the request; it has refilled
        since, and requests we sent later may or may not be counted yet. So the provider's
        level now is at most `remaining + rate * (now - sent_at)`; only a local level above
        that bound is news (someone else spends this account), and then we take the bound,
        less what we still have in flight.
        """
        limit_tokens = _number(headers.get("x-ratelimit-limit-tokens"))
        limit_requests = _number(headers.get("x-ratelimit-limit-requests"))
        remaining_tokens = _number(headers.get("x-ratelimit-remaining-tokens"))
        remaining_requests = _number(headers.get("x-ratelimit-remaining-requests"))
        with self._cond:
            now = self._refill()
            since = max(0.0, now - (now if sent_at is None else sent_at))
            # The account's limit caps our bucket: a worker configured above its account
            # would otherwise burst into 429s.
            for bucket, limit in ((self._tokens, limit_tokens), (self._requests, limit_requests)):
                if limit and limit < bucket.capacity:
                    bucket.capacity = limit
                    bucket.rate = min(bucket.rate, limit / 60.0)
                    bucket.level = min(bucket.level, limit)
            if remaining_tokens is not None:
                bound = remaining_tokens + self._tokens.rate * since
                if self._tokens.level > bound + 1:
                    self._tokens.level = bound - self._in_flight_tokens
            if remaining_requests is not None:
                bound = remaining_requests + self._requests.rate * since
                if self._requests.level > bound + 1:
                    self._requests.level = bound

    def pause(self, seconds: float) -> None:
        """A 429 said 'retry after': nobody sends until then."""
        with self._cond:
            now = self._refill()
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))
            self._cond.notify_all()


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset format ('1s', '6m0s', '120ms', '1.5s', '1h2m3s') in seconds."""
    if not value:
        return None
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    try:
        while i < len(value):
            ch = value[i]
            if ch.isdigit() or ch == ".":
                number += ch
                i += 1
                continue
            unit = "ms" if value.startswith("ms", i) else ch
            total += float(number) * units[unit]
            number = ""
            i += len(unit)
        if number:
            total += float(number)
    except (KeyError, ValueError):
        return None
    return total


def retry_after_seconds(headers: Mapping[str, str], default: float = 1.0) -> float:
    """How long a 429 asks us to wait: retry-after-ms, retry-after, then the reset headers."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    seconds = _number(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    resets = [
        parse_duration(headers.get("x-ratelimit-reset-tokens")),
        parse_duration(headers.get("x-ratelimit-reset-requests")),
    ]
    known = [r for r in resets if r is not None]
    return min(known) if known else default
