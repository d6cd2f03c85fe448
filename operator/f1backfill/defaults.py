"""Defaults and bounds, each written once.

The worker's and the operator's settings (config.py), the YachtBackfill models (api/) and
the migrations take them from here; the CRD (crds/yachtbackfill.yaml) repeats the ones a
YachtBackfill carries, and tests/unit/test_crd_models_drift.py fails when it differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Generic, TypeVar

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Bound(Generic[N]):
    """A number's default and its inclusive limits (None: no limit that side)."""

    default: N
    minimum: N | None = None
    maximum: N | None = None

    def admits(self, value: N) -> bool:
        return (self.minimum is None or value >= self.minimum) and \
            (self.maximum is None or value <= self.maximum)


# --- One Job's work: what a YachtBackfill sets and a worker runs with ----------------------
BATCH_SIZE: Final = Bound(100, 1, 2048)  # rows claimed per batch
BATCH_SLEEP_SECONDS: Final = Bound(0.1, 0.0, 3600.0)  # pause between a lane's batches
MAX_EMBEDDING_CHARS: Final = Bound(24_000, 1, 1_000_000)  # text is cut to this
MAX_ATTEMPTS: Final = Bound(5, 1, 100)  # failures before the dead-letter table
# The provider budget one Job may use: OpenAI's tier-1 limits for embeddings.
REQUESTS_PER_MINUTE: Final = Bound(3000, 1)
TOKENS_PER_MINUTE: Final = Bound(1_000_000, 1)
EMBEDDING_MODEL: Final = "text-embedding-3-small"
# The vector length: what a YachtBackfill may ask for, what a worker accepts and what
# `migrate` gives search_index.embedding. OpenAI's largest model gives 3,072; pgvector's
# vector type would take 16,000, but nothing here needs more than 4,096.
EMBEDDING_DIMENSIONS: Final = Bound(1536, 1, 4096)
DRIFT_TOLERANCE_MINUTES: Final = Bound(10, 0)

# --- Admission --------------------------------------------------------------------------------
# spec.priority: unset, the tier decides (TIER_PRIORITY).
PRIORITY: Final = Bound(0, 0, 1000)
TIER_PRIORITY: Final[Mapping[str, int]] = MappingProxyType({
    "enterprise": 100,
    "premium": 50,
    "standard": 10,
})

# --- A Job's pod -------------------------------------------------------------------------------
# Resources when the CR does not override them (requests = limits, so the pod is Guaranteed
# QoS and is not the first one evicted under memory pressure).
DEFAULT_MEMORY: Final = "512Mi"
DEFAULT_CPU: Final = "500m"


# --- The search front door -------------------------------------------------------------------
# Clock skew tolerated on a token's exp and nbf (seconds): the origin's JWT_LEEWAY_SEC and
# its verifier (frontdoor/auth.py); the edge Worker's JWT_LEEWAY_SECONDS has the same range.
JWT_LEEWAY_SECONDS: Final = Bound(30.0, 0.0, 300.0)
