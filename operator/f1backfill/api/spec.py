"""`YachtBackfill.spec` as typed, immutable models: the CRD's contract in Python.

`BackfillSpec.from_dict(body["spec"])` reads what the API server has already validated
against the CRD and fills in the CRD's defaults, so a spec reads the same whether or not a
server defaulted it first. The defaults come from defaults.py; the bounds, lengths and
patterns are the CRD's alone. The one rule the models add is one the schema cannot state: a
resource request may not exceed its limit (the Job would be refused later, far from the
user's `kubectl apply`). tests/unit/test_crd_models_drift.py keeps models and CRD equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from ..constants import Provider
from ..defaults import (
    BATCH_SIZE,
    BATCH_SLEEP_SECONDS,
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    DRIFT_TOLERANCE_MINUTES,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODEL,
    MAX_ATTEMPTS,
    MAX_EMBEDDING_CHARS,
    REQUESTS_PER_MINUTE,
    TIER_PRIORITY,
    TOKENS_PER_MINUTE,
)
from ..errors import SpecError
from .fields import CrObject, Quantity, parse_quantity, read, to_camel_dict


class Tier(StrEnum):
    ENTERPRISE = "enterprise"
    PREMIUM = "premium"
    STANDARD = "standard"


class Mode(StrEnum):
    ONCE = "Once"
    CONTINUOUS = "Continuous"


@dataclass(frozen=True, slots=True)
class EmbeddingSpec(CrObject):
    PATH: ClassVar[str] = "spec.embedding"

    # None: the operator's configured default provider.
    provider: Provider | None = None
    model: str = EMBEDDING_MODEL
    dimensions: int = EMBEDDING_DIMENSIONS.default


@dataclass(frozen=True, slots=True)
class RateLimitSpec(CrObject):
    PATH: ClassVar[str] = "spec.rateLimit"

    requests_per_minute: int = REQUESTS_PER_MINUTE.default
    tokens_per_minute: int = TOKENS_PER_MINUTE.default


@dataclass(frozen=True, slots=True)
class DriftSource(CrObject):
    """A source table whose records feed search_index rows of one object type."""

    object_type: str
    table: str
    id_column: str = "id"
    updated_at_column: str = "updated_at"


DEFAULT_DRIFT_SOURCES = (DriftSource(object_type="work_order", table="pms_work_orders"),)


@dataclass(frozen=True, slots=True)
class DriftSpec(CrObject):
    PATH: ClassVar[str] = "spec.drift"

    enabled: bool = True
    tolerance_minutes: int = DRIFT_TOLERANCE_MINUTES.default
    auto_requeue: bool = False
    sources: tuple[DriftSource, ...] = DEFAULT_DRIFT_SOURCES


@dataclass(frozen=True, slots=True)
class ResourceList(CrObject):
    memory: Quantity | None = None
    cpu: Quantity | None = None


@dataclass(frozen=True, slots=True)
class ResourcesSpec(CrObject):
    """The Job pod's resources as the CR overrides them; see `requirements()`."""

    PATH: ClassVar[str] = "spec.resources"

    requests: ResourceList | None = None
    limits: ResourceList | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> ResourcesSpec:
        path = cls.PATH if path is None else path
        resources = read(cls, data, path)
        resources._check_requests_within_limits(path)
        return resources

    def requirements(self) -> dict[str, dict[str, Quantity]]:
        """The container's `resources`: a limit defaults to 512Mi / 500m, a request to its
        limit (as Kubernetes itself does), so by default requests = limits."""
        requests = self.requests or ResourceList()
        limits = self.limits or ResourceList()
        memory_limit = limits.memory if limits.memory is not None else DEFAULT_MEMORY
        cpu_limit = limits.cpu if limits.cpu is not None else DEFAULT_CPU
        return {
            "requests": {
                "memory": requests.memory if requests.memory is not None else memory_limit,
                "cpu": requests.cpu if requests.cpu is not None else cpu_limit,
            },
            "limits": {"memory": memory_limit, "cpu": cpu_limit},
        }

    def _check_requests_within_limits(self, path: str) -> None:
        # The CRD's schema cannot compare two quantities; the API server would refuse the Job
        # instead, long after the user applied the CR. Refuse the CR with the same words.
        resolved = self.requirements()
        for resource in ("memory", "cpu"):
            request = resolved["requests"][resource]
            limit = resolved["limits"][resource]
            if parse_quantity(request) > parse_quantity(limit):
                raise SpecError(
                    f"{path}.requests.{resource}",
                    f"Invalid value: {json.dumps(request)}: must be less than or equal to "
                    f"{resource} limit of {limit}",
                )


@dataclass(frozen=True, slots=True)
class BackfillSpec(CrObject):
    """`YachtBackfill.spec`. Build it with `from_dict`, which reads what the CRD validated."""

    PATH: ClassVar[str] = "spec"

    yacht_id: str
    yacht_name: str | None = None
    tier: Tier = Tier.STANDARD
    # None: the tier decides; see `effective_priority`.
    priority: int | None = None
    suspend: bool = False
    mode: Mode = Mode.ONCE
    batch_size: int = BATCH_SIZE.default
    batch_sleep_seconds: float = BATCH_SLEEP_SECONDS.default
    max_embedding_chars: int = MAX_EMBEDDING_CHARS.default
    skip_object_types: tuple[str, ...] = ()
    max_attempts: int = MAX_ATTEMPTS.default
    embedding: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    rate_limit: RateLimitSpec = field(default_factory=RateLimitSpec)
    drift: DriftSpec = field(default_factory=DriftSpec)
    # None: the defaults of `ResourcesSpec.requirements()`.
    resources: ResourcesSpec | None = None

    @property
    def effective_priority(self) -> int:
        """`priority` when set, else the tier's (enterprise 100, premium 50, standard 10)."""
        return self.priority if self.priority is not None else TIER_PRIORITY[self.tier]

    def resource_requirements(self) -> dict[str, dict[str, Quantity]]:
        """The Job container's `resources`, defaults included."""
        return (self.resources or ResourcesSpec()).requirements()

    def to_dict(self) -> dict[str, Any]:
        """The spec as the CR's JSON (camelCase), unset optional fields left out."""
        return to_camel_dict(self)


__all__ = [
    "DEFAULT_DRIFT_SOURCES",
    "BackfillSpec",
    "DriftSource",
    "DriftSpec",
    "EmbeddingSpec",
    "Mode",
    "Provider",
    "RateLimitSpec",
    "ResourceList",
    "ResourcesSpec",
    "Tier",
]
