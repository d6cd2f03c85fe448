"""`YachtBackfill.status` as typed, immutable models.

The operator builds a `BackfillStatus` and patches `status.to_dict()` into the CR. `status.kopf`
(kopf's own bookkeeping) is not modelled: it belongs to kopf and is never written here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..constants import PRIORITY_MAX, PRIORITY_MIN, ConditionType, Phase
from ..memory import shared
from .fields import FieldReader, changed_camel_fields, to_camel_dict

# metav1.Condition's own validation, which the CRD repeats.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Condition:
    """One entry of `status.conditions`, in the Kubernetes convention (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "status.conditions[0]") -> Condition:
        r = FieldReader(data, path)
        r.string("type", required=True, pattern=CONDITION_TYPE_PATTERN, max_length=316)
        r.enum("status", ConditionStatus, required=True)
        r.string(
            "reason",
            required=True,
            pattern=CONDITION_REASON_PATTERN,
            min_length=1,
            max_length=1024,
        )
        r.string("message", required=True, max_length=32768)
        r.timestamp("last_transition_time", required=True)
        r.integer("observed_generation", minimum=0)
        # Types, reasons and most messages repeat across a fleet's statuses (each backfill
        # has seven conditions): one string object each, not one per condition.
        for name in ("type", "reason", "message"):
            r.kwargs[name] = shared(r.kwargs[name])
        return cls(**r.kwargs)

    @property
    def is_true(self) -> bool:
        return self.status == ConditionStatus.TRUE

    def to_dict(self) -> dict[str, Any]:
        return to_camel_dict(self)


@dataclass(frozen=True, slots=True)
class Progress:
    """Row counts of the yacht in search_index, by embedding status."""

    total: int = 0
    done: int = 0
    queued: int = 0
    processing: int = 0
    failed: int = 0
    dlq: int = 0
    percent: float = 0.0

    @classmethod
    def from_counts(
        cls,
        *,
        total: int,
        done: int,
        queued: int = 0,
        processing: int = 0,
        failed: int = 0,
        dlq: int = 0,
    ) -> Progress:
        """Counts plus `percent` = done / total, rounded to 0.1; a yacht with no rows is
        100% done."""
        percent = 100.0 if total <= 0 else round(min(done, total) * 100 / total, 1)
        return cls(
            total=total,
            done=done,
            queued=queued,
            processing=processing,
            failed=failed,
            dlq=dlq,
            percent=percent,
        )

    @classmethod
    def from_dict(cls, data: Any, path: str = "status.progress") -> Progress:
        r = FieldReader(data, path)
        for name in ("total", "done", "queued", "processing", "failed", "dlq"):
            r.integer(name, minimum=0)
        r.number("percent", minimum=0, maximum=100)
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class DlqStatus:
    unresolved: int = 0
    # The last annotation values acted on (f1cortex.io/replay- / abandon-dead-letters).
    replayed: str | None = None
    abandoned: str | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "status.dlq") -> DlqStatus:
        r = FieldReader(data, path)
        r.integer("unresolved", minimum=0)
        r.string("replayed", max_length=253)
        r.string("abandoned", max_length=253)
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class DriftStatus:
    stale_rows: int = 0
    last_checked_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "status.drift") -> DriftStatus:
        r = FieldReader(data, path)
        r.integer("stale_rows", minimum=0)
        r.timestamp("last_checked_at")
        return cls(**r.kwargs)


@dataclass(frozen=True, slots=True)
class BackfillStatus:
    """`YachtBackfill.status`. Every field is optional: a new CR has no status yet."""

    phase: Phase | None = None
    queue_position: int | None = None
    effective_priority: int | None = None
    job_name: str | None = None
    # Admissions so far; the Job of admission N is job_name(..., N).
    admissions: int | None = None
    # Consecutive failed Jobs, reset by a success or a spec change.
    failed_jobs: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    progress: Progress | None = None
    # Rows embedded per minute, recently.
    rate: float | None = None
    # Human-readable time to drain the queue, e.g. "1h20m".
    eta: str | None = None
    dlq: DlqStatus | None = None
    drift: DriftStatus | None = None
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, path: str = "status") -> BackfillStatus:
        """The status of a YachtBackfill body; `status.kopf` and unknown keys are ignored."""
        r = FieldReader(data, path)
        r.enum("phase", Phase)
        r.integer("queue_position", minimum=1)
        r.integer("effective_priority", minimum=PRIORITY_MIN, maximum=PRIORITY_MAX)
        r.string("job_name", max_length=63)
        r.integer("admissions", minimum=0)
        r.integer("failed_jobs", minimum=0)
        r.timestamp("started_at")
        r.timestamp("completed_at")
        r.nested("progress", Progress.from_dict)
        r.number("rate", minimum=0)
        r.string("eta")
        r.nested("dlq", DlqStatus.from_dict)
        r.nested("drift", DriftStatus.from_dict)
        r.integer("observed_generation", minimum=0)
        r.objects("conditions", Condition.from_dict, max_items=16)
        return cls(**r.kwargs)

    def to_dict(self, *, prune_none: bool = True) -> dict[str, Any]:
        """The status as the CR's JSON (camelCase).

        `prune_none=False` writes unset fields as null, which removes them when the result
        is sent as a merge patch (e.g. `queuePosition` once a backfill is admitted).
        """
        return to_camel_dict(self, prune_none=prune_none)

    def changed_since(self, old: BackfillStatus) -> dict[str, Any]:
        """The top-level fields whose JSON differs from `old`'s, as JSON (unset: null)."""
        return changed_camel_fields(old, self)

    def condition(self, type_: ConditionType | str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def with_condition(self, new: Condition) -> BackfillStatus:
        """This status with `new` replacing the condition of its type."""
        return self.with_conditions([new])

    def with_conditions(self, news: Iterable[Condition]) -> BackfillStatus:
        """This status with each of `news` replacing the condition of its type (see
        `merge_conditions`)."""
        return dataclasses.replace(self, conditions=merge_conditions(self.conditions, news))


def merge_conditions(olds: Iterable[Condition], news: Iterable[Condition]
                     ) -> tuple[Condition, ...]:
    """`olds` with each of `news` replacing the condition of its type.

    As the Kubernetes convention asks, `lastTransitionTime` only moves when a condition's
    status changes; a new reason or message alone keeps the old time. The order stays
    stable (new types are appended), so repeated patches do not shuffle the list. An old
    condition that the new one repeats but for its time is kept as it is.
    """
    by_type = {c.type: c for c in news}
    conditions = []
    for old in olds:
        new = by_type.pop(old.type, None)
        if new is None or new == old:
            conditions.append(old)
        elif old.status != new.status:
            conditions.append(new)
        elif (new.reason, new.message, new.observed_generation) == \
                (old.reason, old.message, old.observed_generation):
            conditions.append(old)  # only the time differs, and the old one stays
        else:
            conditions.append(Condition(new.type, new.status, new.reason, new.message,
                                        old.last_transition_time, new.observed_generation))
    conditions.extend(by_type.values())
    return tuple(conditions)
