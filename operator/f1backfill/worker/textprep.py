"""Text cleaning and token estimates: what is sent is decided here, in one place."""

from __future__ import annotations

import re
import threading

# C0/C1 control characters other than tab and newline; NUL among them. The provider
# rejects some of them, and none carries meaning for an embedding.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")

# OpenAI's published caps for one embeddings request.
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_INPUT = 8192
MAX_TOKENS_PER_REQUEST = 300_000


def clean(text: str | None, max_chars: int) -> str:
    """Control characters dropped, whitespace collapsed, cut to max_chars."""
    if not text:
        return ""
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    return text[:max_chars].rstrip()


class TokenEstimator:
    """Estimates a text's tokens before sending, learning chars-per-token from `usage`.

    The estimate is what the rate limiter reserves. Over-estimating costs nothing in the long
    run (the reservation is corrected by the response's usage), under-estimating risks a 429,
    so the learnt ratio is biased low (more tokens) by `margin`.
    """

    def __init__(self, chars_per_token: float = 4.0, margin: float = 0.05) -> None:
        self._chars_per_token = chars_per_token
        self._margin = margin
        self._lock = threading.Lock()

    @property
    def chars_per_token(self) -> float:
        return self._chars_per_token

    def estimate(self, text: str) -> int:
        return max(1, int(len(text) / self._chars_per_token * (1 + self._margin)) + 1)

    def max_chars_for(self, tokens: int) -> int:
        """The longest text whose estimate stays within `tokens` (for the per-input cap)."""
        return max(1, int((tokens - 1) * self._chars_per_token / (1 + self._margin)))

    def observe(self, chars: int, tokens: int) -> None:
        """Blend in what the provider counted for `chars` characters of input."""
        if chars <= 0 or tokens <= 0:
            return
        observed = chars / tokens
        with self._lock:
            # A moving average: a few requests converge, one odd request does not swing it.
            self._chars_per_token = 0.7 * self._chars_per_token + 0.3 * observed
