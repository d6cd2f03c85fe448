"""Client-side pacing under requests/min and tokens/min, before the provider says 429.

OpenAI's limiter behaves like two token buckets (requests and tokens) holding one minute of
budget and refilling continuously; this mirrors them. A request reserves its estimated
tokens before it is sent, and `settle` corrects the bucket with the tokens the provider
reported in `usage`, so estimation errors do not accumulate. The provider's
`x-ratelimit-remaining-*` headers pull the buckets down when someone else spends the same
account, and a 429's `retry-after` pauses every lane.

The buckets live in two places. `RateLimiter` is the worker's own: the cap its Job was given.
The account's buckets are shared by every worker that spends the same API key and model
(`SharedBucket`, one row of `provider_budget` in Postgres, docs/design.md "The account's
budget"): a worker with one attached reserves there too, so several workers, and a worker
that starts just after another finished, see the account as the provider does. The
arithmetic of both is the module-level functions below, written once and unit-tested; the
shared row applies the same refill and cap in SQL (queries.sql, `budget_apply`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..db import query
from ..db.connection import connect, translated_errors
from ..errors import Cancelled

log = logging.getLogger(__name__)

# A request waiting its turn in the shared bucket re-reads the row this often when nothing
# else did, so that budget other workers give back reaches it.
REFRESH_SECONDS = 0.25


@dataclass
class Reservation:
    tokens: int
    settled: bool = False
    # When the request left (the embedder's monotonic clock); None: never sent.
    sent_at: float | None = None
    # The shared row just after this reservation, and when it returned: the reference its
    # response's rate-limit headers are compared with (`correction`); None once settled.
    shared: SharedLevel | None = None
    reserved_at: float = 0.0


# -- the buckets' arithmetic, shared by the local limiter's tests and SharedBucket --------
def refilled(level: float, per_minute: float, elapsed: float) -> float:
    """A bucket's level `elapsed` seconds later: refilled at per_minute/60 a second, capped
    at one minute's budget. A level below zero (budget promised to waiting requests) refills
    the same way."""
    return min(per_minute, level + per_minute / 60.0 * max(0.0, elapsed))


def wait_seconds(level: float, per_minute: float) -> float:
    """How long a reservation that left the bucket at `level` waits before it is sent: until
    the refill brings the level back to zero, i.e. the provider's bucket holds what it takes."""
    return max(0.0, -level) * 60.0 / per_minute


def provider_level(remaining: float | None, reset_seconds: float | None,
                   per_minute: float) -> float | None:
    """The provider's level when it answered, from `x-ratelimit-remaining-*` (whole units,
    rounded down) and `x-ratelimit-reset-*` (time until full, rounded up): the reset
    refines the remaining count within its unit, and neither rounding overstates it."""
    if remaining is None:
        return None
    if reset_seconds is None:
        return remaining
    from_reset = per_minute - per_minute / 60.0 * reset_seconds
    return max(remaining, min(remaining + 1, from_reset))


def correction(reference: float, since: float, per_minute: float, provider: float,
               adjusted_since: float = 0.0) -> float:
    """What to add to the shared level so that it agrees with the provider.

    `reference` is the shared level just after this request's reservation and `provider`
    the provider's level just after it admitted (or refused) the request, `since` seconds
    later. Everything reserved after ours is counted in our level and not yet in the
    provider's, so the two differ only by what neither side knew of the other: requests of
    someone else on the key, the tokens the provider counted against our estimate, a refused
    request, a new row's unknown start. The reference is refilled to the moment of admission
    before comparing, so the refill is not counted twice, and `adjusted_since` (settlements
    and corrections applied to the row since the reservation) is counted as known, so two
    responses that bring the same news move the level once. `budget_apply` computes this in
    the row's own transaction, where `adjusted_since` is exact.
    """
    return provider - (refilled(reference, per_minute, since) + adjusted_since)


def account_id(api_key: str, model: str) -> str:
    """The shared bucket's key: a SHA-256 of the API key and the model; the key itself is
    never stored."""
    digest = hashlib.sha256(f"f1backfill provider budget\0{api_key}\0{model}".encode())
    return digest.hexdigest()


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
        self.shared: SharedBucket | None = None

    def attach(self, shared: SharedBucket) -> None:
        """From now on every request also reserves from the account's shared bucket, and the
        provider's headers correct that one (this limiter stays the worker's own cap)."""
        self.shared = shared

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
        """Block until one request of `tokens` fits both budgets (and the account's shared
        bucket, when one is attached), then take it."""
        reservation = self._acquire_local(tokens, cancelled)
        if self.shared is not None:
            try:
                self.shared.reserve(reservation, cancelled)
            except BaseException:
                self.settle(reservation, None)
                raise
        return reservation

    def _acquire_local(self, tokens: int, cancelled: threading.Event | None) -> Reservation:
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

    def settle(self, reservation: Reservation, actual_tokens: int | None,
               headers: Mapping[str, str] | None = None) -> None:
        """The request finished: replace its estimate with what the provider counted, and
        align with the provider's rate-limit `headers` when the response carries them.

        `actual_tokens=None` means the provider did not count it (refused with 429/400 before
        processing): the reservation is given back whole.
        """
        if reservation.settled:
            return
        if self.shared is not None:
            self.shared.settle(reservation, actual_tokens, headers or {})
        self._settle_local(reservation, actual_tokens)
        if headers and self.shared is None:
            self.observe_headers(headers, reservation.sent_at)
        elif headers:
            # The shared bucket follows the levels; this one still takes the account's
            # limits as a cap, so that no request is packed larger than the account.
            with self._cond:
                self._refill()
                self._cap_to_limits(headers)

    def _settle_local(self, reservation: Reservation, actual_tokens: int | None) -> None:
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
        remaining_tokens = _remaining(headers, "tokens")
        remaining_requests = _remaining(headers, "requests")
        with self._cond:
            now = self._refill()
            since = max(0.0, now - (now if sent_at is None else sent_at))
            self._cap_to_limits(headers)
            if remaining_tokens is not None:
                bound = remaining_tokens + self._tokens.rate * since
                if self._tokens.level > bound + 1:
                    self._tokens.level = bound - self._in_flight_tokens
            if remaining_requests is not None:
                bound = remaining_requests + self._requests.rate * since
                if self._requests.level > bound + 1:
                    self._requests.level = bound

    def _cap_to_limits(self, headers: Mapping[str, str]) -> None:
        """The account's limit caps our bucket: a worker configured above its account would
        otherwise burst into 429s. Call under the condition."""
        for bucket, limit in ((self._tokens, _limit(headers, "tokens")),
                              (self._requests, _limit(headers, "requests"))):
            if limit and limit < bucket.capacity:
                bucket.capacity = limit
                bucket.rate = min(bucket.rate, limit / 60.0)
                bucket.level = min(bucket.level, limit)

    def pause(self, seconds: float) -> None:
        """A 429 said 'retry after': nobody sends until then."""
        with self._cond:
            now = self._refill()
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))
            self._cond.notify_all()


@dataclass(frozen=True)
class SharedLevel:
    """The shared row after one statement."""

    requests: float
    tokens: float
    requests_per_minute: float
    tokens_per_minute: float
    requests_adjusted: float  # every settlement and correction ever applied, summed
    tokens_adjusted: float
    moved_requests: float  # what this statement's settlement or correction moved
    moved_tokens: float


class SharedBucket:
    """The account's two buckets, one `provider_budget` row shared by every worker that
    spends the same key and model; one statement (`budget_apply`) per reservation and at
    most one per settlement, on this worker's own connection.

    A reservation always takes its budget at once, even when the level goes below zero,
    and is told how long to wait: the requests of all workers queue in the order they
    reserved, each sent when the provider's bucket holds what it takes. A worker that
    starts reads the level its predecessors left, refilled by the time since on the
    database's clock: never a full bucket it does not have.
    """

    def __init__(self, dsn: str, account: str, requests_per_minute: float,
                 tokens_per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 name: str = "f1backfill-budget") -> None:
        self.account = account
        self._clock = clock
        self._lock = threading.Lock()  # one connection, shared by the lanes
        # The row as last seen, and when: a lane waiting for its turn follows the
        # settlements and corrections applied since its reservation (`*_adjusted`, every
        # worker's), refreshing the row when nothing else has for REFRESH_SECONDS.
        self._moved = threading.Condition()
        self._seen_at = clock()
        self._refreshing = False
        self._conn = connect(dsn, application_name=name[:63])
        self._conn.autocommit = True
        self.level = self._run("budget_open", {
            "account": account, "requests_per_minute": float(requests_per_minute),
            "tokens_per_minute": float(tokens_per_minute)})

    def close(self) -> None:
        self._conn.close()

    @property
    def requests_per_minute(self) -> float:
        return self.level.requests_per_minute

    @property
    def tokens_per_minute(self) -> float:
        return self.level.tokens_per_minute

    def _run(self, name: str, params: dict) -> SharedLevel:
        with self._lock, translated_errors(), self._conn.cursor() as cur:
            cur.execute(query(name), params)
            level = SharedLevel(*(float(v) for v in cur.fetchone()))
        with self._moved:
            self.level, self._seen_at = level, self._clock()
            self._moved.notify_all()
        log.debug("shared budget %s(%s): %s", name, {
            k: v for k, v in params.items() if v is not None and k != "account"}, level)
        return level

    def _apply(self, *, requests: float = 0.0, tokens: float = 0.0, adjust: bool = False,
               **headers_view: float | None) -> SharedLevel:
        params = {"account": self.account, "requests": requests, "tokens": tokens,
                  "adjust": adjust, "requests_limit": None, "tokens_limit": None,
                  "seen_requests": None, "expected_requests": None,
                  "seen_tokens": None, "expected_tokens": None}
        params.update(headers_view)
        return self._run("budget_apply", params)

    def snapshot(self) -> dict[str, float]:
        """The levels now (a statement that moves nothing refills and reads them)."""
        level = self._apply()
        return {"requests": level.requests, "tokens": level.tokens}

    def reserve(self, reservation: Reservation, cancelled: threading.Event | None) -> None:
        """Take one request and its tokens, then wait until the provider can admit them."""
        reserved = self._apply(requests=-1.0, tokens=-float(reservation.tokens))
        reservation.shared = reserved
        start = reservation.reserved_at = self._clock()
        wait_requests = wait_seconds(reserved.requests, reserved.requests_per_minute)
        wait_tokens = wait_seconds(reserved.tokens, reserved.tokens_per_minute)
        while wait_requests > 0 or wait_tokens > 0:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            with self._moved:
                # Budget given back (or taken) since the reservation moves the turn.
                level, seen_at = self.level, self._seen_at
                due = start + max(
                    wait_requests - (level.requests_adjusted - reserved.requests_adjusted)
                    * 60.0 / level.requests_per_minute,
                    wait_tokens - (level.tokens_adjusted - reserved.tokens_adjusted)
                    * 60.0 / level.tokens_per_minute)
                now = self._clock()
                if due <= now:
                    return
                refresh = not self._refreshing and now - seen_at >= REFRESH_SECONDS
                if refresh:
                    self._refreshing = True
                else:
                    self._moved.wait(min(due - now, REFRESH_SECONDS))
            if refresh:
                try:
                    self._apply()
                finally:
                    with self._moved:
                        self._refreshing = False

    def settle(self, reservation: Reservation, actual_tokens: int | None,
               headers: Mapping[str, str]) -> None:
        """Give back what the provider did not count, or, when the response says what the
        provider's buckets hold, move the shared level there (`correction`).

        An error here is logged, not raised: the request is done, and the next response's
        headers correct the level.
        """
        reserved, reservation.shared = reservation.shared, None
        if reserved is None:
            return  # never reserved here, or settled already
        view = self.headers_view(reservation, reserved, headers)
        # Without the provider's view, what it did not count comes back.
        give_tokens = float(reservation.tokens - (actual_tokens or 0))
        give_requests = 1.0 if actual_tokens is None else 0.0
        if not (give_requests or give_tokens or any(v is not None for v in view.values())):
            return  # spent as estimated, and nothing new: no round trip
        try:
            self._apply(requests=give_requests, tokens=give_tokens, adjust=True, **view)
        except Exception as exc:  # the request is done: a failed settlement must not fail it
            log.warning("could not settle with the shared budget (%s: %s); the next "
                        "response corrects it", type(exc).__name__, exc)

    @staticmethod
    def headers_view(reservation: Reservation, reserved: SharedLevel,
                     headers: Mapping[str, str]) -> dict[str, float | None]:
        """The provider's limits and levels from `headers`, with what the reservation
        predicted for the moment the provider saw the request (`budget_apply`'s
        `expected_*`)."""
        requests_limit = _limit(headers, "requests")
        tokens_limit = _limit(headers, "tokens")
        rpm = min(reserved.requests_per_minute, requests_limit or math.inf)
        tpm = min(reserved.tokens_per_minute, tokens_limit or math.inf)
        sent_at = reservation.sent_at
        since = 0.0 if sent_at is None else max(0.0, sent_at - reservation.reserved_at)
        view: dict[str, float | None] = {"requests_limit": requests_limit,
                                         "tokens_limit": tokens_limit}
        for bucket, per_minute, level, adjusted in (
                ("requests", rpm, reserved.requests, reserved.requests_adjusted),
                ("tokens", tpm, reserved.tokens, reserved.tokens_adjusted)):
            seen = provider_level(_remaining(headers, bucket),
                                  parse_duration(headers.get(f"x-ratelimit-reset-{bucket}")),
                                  per_minute)
            view[f"seen_{bucket}"] = seen
            view[f"expected_{bucket}"] = (
                None if seen is None else refilled(level, per_minute, since) - adjusted)
        return view


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _limit(headers: Mapping[str, str], bucket: str) -> float | None:
    """x-ratelimit-limit-{bucket}; None unless positive (Azure's OpenAI has been seen
    answering -1 for 'not known')."""
    value = _number(headers.get(f"x-ratelimit-limit-{bucket}"))
    return value if value is not None and value > 0 else None


def _remaining(headers: Mapping[str, str], bucket: str) -> float | None:
    """x-ratelimit-remaining-{bucket}; None when absent or negative ('not known')."""
    value = _number(headers.get(f"x-ratelimit-remaining-{bucket}"))
    return value if value is not None and value >= 0 else None


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
