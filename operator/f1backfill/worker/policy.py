"""How the embedder answers each kind of failed embeddings request, as one table.

A policy says what the failure costs the rate limiter (the reservation given back, or kept
as spent), what the circuit breaker records, which `f1_openai_requests_total` status it is
counted under, whether the provider's rate-limit headers and retry-after are honoured, and
what happens to the request's rows next. `Embedder._send` looks the policy up and applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from ..errors import (
    AuthFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RequestTooLarge,
)
from .breaker import CircuitBreaker


class Then(Enum):
    """What happens to a failed request's rows."""

    RESEND = "resend"  # send them again as soon as the limiter allows; no attempt is charged
    BISECT = "bisect"  # split until the refused row stands alone; dead-letter that one
    BACK_OFF = "back off"  # charge each an attempt, wait, resend; out of attempts: dead letter
    STOP = "stop"  # no row is at fault and no retry helps: the error stops the worker


@dataclass(frozen=True, slots=True)
class Policy:
    status: str  # the f1_openai_requests_total{status} label
    then: Then
    # What the breaker records (an unbound CircuitBreaker method); None: nothing.
    breaker: Callable[[CircuitBreaker], None] | None
    # True: the reservation stays spent (the provider may have counted the request);
    # False: it is given back whole (the provider refused the request before counting it).
    keep_estimate: bool = False
    # True: the response's rate-limit headers correct the limiter and its retry-after
    # pauses every lane.
    retry_after: bool = False


POLICIES: Final[Mapping[type[ProviderError], Policy]] = MappingProxyType({
    # 429: the provider is pacing us, not failing; the wait is every lane's.
    RateLimited: Policy(
        "rate_limited", Then.RESEND, CircuitBreaker.record_neutral, retry_after=True),
    # 400: the provider is up and answering; one row in the request is refused.
    InvalidInput: Policy("invalid_input", Then.BISECT, CircuitBreaker.record_success),
    # 429 'request too large': smaller requests pass; says nothing of the provider's health.
    RequestTooLarge: Policy("invalid_input", Then.BISECT, CircuitBreaker.record_neutral),
    # 401/403: the key is wrong or lacks access.
    AuthFailed: Policy("error", Then.STOP, CircuitBreaker.record_neutral),
    # 5xx, timeouts and unreadable responses (ProviderTimeout, BadResponse): the provider
    # may have counted the request, and its failures are what the breaker is for.
    ProviderUnavailable: Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_failure, keep_estimate=True),
    # insufficient_quota: billing, not an outage, so no failure for the breaker, but a
    # neutral verdict: a half-open probe that ends this way must free the probe slot, or
    # every lane waits for a verdict that never comes. It counts against the rows.
    QuotaExhausted: Policy(
        "error", Then.BACK_OFF, CircuitBreaker.record_neutral, keep_estimate=True),
})

# What the embedder catches; any other error propagates untouched.
HANDLED: Final = tuple(POLICIES)


def policy_for(exc: ProviderError) -> Policy:
    """The policy of the nearest of `exc`'s classes in the table."""
    for cls in type(exc).__mro__:
        if cls in POLICIES:
            return POLICIES[cls]
    raise LookupError(f"no policy for {type(exc).__name__}")
