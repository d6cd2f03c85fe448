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
from typing import Any, ClassVar

from ..constants import ConditionType, Phase
from ..memory import shared
from .fields import CrObject, changed_camel_fields, to_camel_dict


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Condition(CrObject):
    """One entry of `status.conditions`, in the Kubernetes convention (metav1.Condition)."""

    PATH: ClassVar[str] = "status.conditions[0]"

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None

    @classmethod
    def _normalise(cls, values: dict[str, Any], path: str) -> None:
        # Types, reasons and most messages repeat across a fleet's statuses (each backfill
        # has seven conditions): one string object each, not one per condition.
        for name in ("type", "reason", "message"):
            values[name] = shared(values[name])

    @property
    def is_true(self) -> bool:
        return self.status == ConditionStatus.TRUE

    def to_dict(self) -> dict[str, Any]:
        return to_camel_dict(self)


@dataclass(frozen=True, slots=True)
class Progress(CrObject):
    """Row counts of the yacht in search_index, by embedding status."""

    PATH: ClassVar[str] = "status.progress"

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


@dataclass(frozen=True, slots=True)
class DlqStatus(CrObject):
    PATH: ClassVar[str] = "status.dlq"

    unresolved: int = 0
    # The last annotation values acted on (f1cortex.io/replay- / abandon-dead-letters).
    replayed: str | None = None
    abandoned: str | None = None


@dataclass(frozen=True, slots=True)
class DriftStatus(CrObject):
    PATH: ClassVar[str] = "status.drift"

    stale_rows: int = 0
    last_checked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BackfillStatus(CrObject):
    """`YachtBackfill.status`. Every field is optional: a new CR has no status yet."""

    PATH: ClassVar[str] = "status"

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
