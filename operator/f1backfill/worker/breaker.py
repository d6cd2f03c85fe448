"""A circuit breaker over provider failures (5xx, timeouts, unreadable responses).

closed -> open after `threshold` consecutive failures; open for `reset_seconds`; then
half-open lets exactly one probe through: success closes it, failure opens it again.
429s are not failures here: the rate limiter handles them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from ..errors import Cancelled


class BreakerState(IntEnum):
    # The values of the f1_circuit_breaker_state gauge, which the alert and dashboard read.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        reset_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._cond = threading.Condition()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_out = False
        self.consecutive_failures = 0

    @property
    def state(self) -> BreakerState:
        with self._cond:
            return self._current()

    def _current(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_seconds
        ):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)

    def before_request(self, cancelled: threading.Event | None = None) -> None:
        """Block while open; in half-open, let one caller through as the probe."""
        with self._cond:
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                state = self._current()
                if state is BreakerState.CLOSED:
                    return
                if state is BreakerState.HALF_OPEN and not self._probe_out:
                    self._probe_out = True
                    return
                if state is BreakerState.OPEN:
                    wait = self.reset_seconds - (self._clock() - self._opened_at)
                else:
                    wait = 0.5  # a probe is out: its result will notify us
                self._cond.wait(timeout=max(0.01, min(wait, 0.5)))

    def record_success(self) -> None:
        with self._cond:
            self.consecutive_failures = 0
            self._probe_out = False
            self._set(BreakerState.CLOSED)
            self._cond.notify_all()

    def record_failure(self) -> None:
        with self._cond:
            self.consecutive_failures += 1
            probing = self._state is BreakerState.HALF_OPEN
            if probing or self.consecutive_failures >= self.threshold:
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)
            self._probe_out = False
            self._cond.notify_all()

    def record_neutral(self) -> None:
        """A request ended with neither verdict (a 429, a 400): free the probe slot."""
        with self._cond:
            self._probe_out = False
            self._cond.notify_all()
