"""`YachtBackfill.spec` as typed, immutable models: the CRD's contract in Python.

`BackfillSpec.from_dict(body["spec"])` applies the CRD's defaults and checks its bounds, so
the operator behaves the same whether or not an API server defaulted and validated the
object first. Defaults are written once, as dataclass defaults; the bounds are in the
`from_dict` methods. tests/unit/test_crd_models_drift.py keeps both equal to the CRD's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..constants import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TIER_PRIORITY,
    Provider,
)
from .fields import (
    OBJECT_TYPE_PATTERN,
    SQL_IDENTIFIER_PATTERN,
    UUID_PATTERN,
    FieldReader,
    Quantity,
    SpecError,
    parse_quantity,
    to_camel_dict,
)

IDENTIFIER_MAX_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1


class Tier(StrEnum):
    ENTERPRISE = "enterprise"
    PREMIUM = "premium"
    STANDARD = "standard"


class Mode(StrEnum):
    ONCE = "Once"
    CONTINUOUS = "Continuous"


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    # None: the operator's configured default provider.
    provider: Provider | None = None
    model: str = "text-embedding-3-small"
    dimensions: int = 1536

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec.embedding") -> EmbeddingSpec:
        r = FieldReader(data, path)
        r.enum("provider", Provider)
        r.string("model", min_length=1, max_length=128)
        r.integer("dimensions", minimum=1, maximum=4096)
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    requests_per_minute: int = 3000
    tokens_per_minute: int = 1_000_000

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec.rateLimit") -> RateLimitSpec:
        r = FieldReader(data, path)
        r.integer("requests_per_minute", minimum=1)
        r.integer("tokens_per_minute", minimum=1)
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class DriftSource:
    """A source table whose records feed search_index rows of one object type."""

    object_type: str
    table: str
    id_column: str = "id"
    updated_at_column: str = "updated_at"

    @classmethod
    def from_dict(cls, data: Any, path: str) -> DriftSource:
        r = FieldReader(data, path)
        r.string(
            "object_type",
            required=True,
            pattern=OBJECT_TYPE_PATTERN,
            max_length=IDENTIFIER_MAX_LENGTH,
        )
        for name in ("table", "id_column", "updated_at_column"):
            r.string(
                name,
                required=name == "table",
                pattern=SQL_IDENTIFIER_PATTERN,
                max_length=IDENTIFIER_MAX_LENGTH,
            )
        return cls(**r.kwargs)


DEFAULT_DRIFT_SOURCES = (DriftSource(object_type="work_order", table="pms_work_orders"),)


@dataclass(frozen=True, slots=True)
class DriftSpec:
    enabled: bool = True
    tolerance_minutes: int = 10
    auto_requeue: bool = False
    sources: tuple[DriftSource, ...] = DEFAULT_DRIFT_SOURCES

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec.drift") -> DriftSpec:
        r = FieldReader(data, path)
        r.boolean("enabled")
        r.integer("tolerance_minutes", minimum=0)
        r.boolean("auto_requeue")
        r.objects("sources", DriftSource.from_dict, max_items=32)
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class ResourceList:
    memory: Quantity | None = None
    cpu: Quantity | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str) -> ResourceList:
        r = FieldReader(data, path)
        r.quantity("memory")
        r.quantity("cpu")
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class ResourcesSpec:
    """The Job pod's resources as the CR overrides them; see `requirements()`."""

    requests: ResourceList | None = None
    limits: ResourceList | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec.resources") -> ResourcesSpec:
        r = FieldReader(data, path)
        r.nested("requests", ResourceList.from_dict)
        r.nested("limits", ResourceList.from_dict)
        resources = cls(**r.kwargs)
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
class BackfillSpec:
    """`YachtBackfill.spec`. Build it with `from_dict`, which checks what the CRD checks."""

    yacht_id: str
    yacht_name: str | None = None
    tier: Tier = Tier.STANDARD
    # None: the tier decides; see `effective_priority`.
    priority: int | None = None
    suspend: bool = False
    mode: Mode = Mode.ONCE
    batch_size: int = 100
    batch_sleep_seconds: float = 0.1
    max_embedding_chars: int = 24_000
    skip_object_types: tuple[str, ...] = ()
    max_attempts: int = 5
    embedding: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    rate_limit: RateLimitSpec = field(default_factory=RateLimitSpec)
    drift: DriftSpec = field(default_factory=DriftSpec)
    # None: the defaults of `ResourcesSpec.requirements()`.
    resources: ResourcesSpec | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec") -> BackfillSpec:
        """The spec of a YachtBackfill body, with the CRD's defaults applied.

        Raises `SpecError` (a `ValueError`) whose `field` is the offending path, e.g.
        `spec.batchSize`, worded as the API server words it.
        """
        r = FieldReader(data, path)
        r.string("yacht_id", required=True, pattern=UUID_PATTERN, max_length=36)
        r.string("yacht_name", max_length=128)
        r.enum("tier", Tier)
        r.integer("priority", minimum=PRIORITY_MIN, maximum=PRIORITY_MAX)
        r.boolean("suspend")
        r.enum("mode", Mode)
        r.integer("batch_size", minimum=1, maximum=2048)
        r.number("batch_sleep_seconds", minimum=0, maximum=3600)
        r.integer("max_embedding_chars", minimum=1, maximum=1_000_000)
        r.string_set(
            "skip_object_types",
            pattern=OBJECT_TYPE_PATTERN,
            max_length=IDENTIFIER_MAX_LENGTH,
            max_items=64,
        )
        r.integer("max_attempts", minimum=1, maximum=100)
        r.nested("embedding", EmbeddingSpec.from_dict)
        r.nested("rate_limit", RateLimitSpec.from_dict)
        r.nested("drift", DriftSpec.from_dict)
        r.nested("resources", ResourcesSpec.from_dict)
        return cls(**r.kwargs)

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
