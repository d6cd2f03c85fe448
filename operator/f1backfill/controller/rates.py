"""Rows embedded per minute over the last few minutes, per backfill (display only)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

RATE_WINDOW_SECONDS = 300.0


class RateTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, uid: str, embedded: int) -> float | None:
        now = self._clock()
        samples = self._samples.setdefault(uid, deque())
        samples.append((now, embedded))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_SECONDS:
            samples.popleft()
        (t0, e0), (t1, e1) = samples[0], samples[-1]
        if t1 - t0 < 1.0 or e1 < e0:
            return None
        return (e1 - e0) * 60.0 / (t1 - t0)

    def forget(self, present: set[str]) -> None:
        for uid in set(self._samples) - present:
            del self._samples[uid]
