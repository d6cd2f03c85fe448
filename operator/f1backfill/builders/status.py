"""(observed backfill, verdict, database figures) -> desired status and the Events that its
transitions deserve. Pure: the clock is a parameter.

Events fade after about an hour; conditions stay. So every Event here is raised on a
transition of the status it is compared with, which is the status stored in the cluster:
a restarted operator neither repeats nor forgets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..admission import ObservedBackfill, Verdict
from ..api import (
    BackfillStatus,
    Condition,
    ConditionStatus,
    DlqStatus,
    DriftStatus,
    Phase,
    Progress,
    merge_conditions,
)
from ..constants import ConditionType
from ..db.figures import YachtFigures

NORMAL, WARNING = "Normal", "Warning"


@dataclass(frozen=True)
class EventNote:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Thresholds:
    dlq_warning: int
    dlq_critical: int


def format_eta(minutes: float | None) -> str | None:
    if minutes is None:
        return None
    seconds = round(minutes * 60)
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds // 60, 60)
    return f"{hours}h{rest:02d}m" if hours else f"{rest}m"


def build_status(
    backfill: ObservedBackfill,
    verdict: Verdict,
    figures: YachtFigures | None,
    *,
    rate: float | None,
    drift: DriftStatus | None,
    thresholds: Thresholds,
    job_name: str | None,
    now: datetime,
) -> tuple[BackfillStatus, list[EventNote]]:
    old = backfill.status
    events: list[EventNote] = []
    figures = figures or YachtFigures()
    # A new run: admitted now, or a Job the status has not recorded yet (the operator died
    # between creating it and writing the status).
    admitted_now = verdict.admit is not None or (
        verdict.job is not None and not verdict.job.finished
        and verdict.job.admission > (old.admissions or 0))
    admissions = max(old.admissions or 0, verdict.admit or 0,
                     verdict.job.admission if verdict.job else 0)
    started_at = now if admitted_now else old.started_at
    completed_at = old.completed_at
    if verdict.phase in (Phase.SUCCEEDED, Phase.FAILED):
        if old.phase is not verdict.phase or completed_at is None:
            completed_at = now
    elif admitted_now or verdict.phase is Phase.QUEUED:
        completed_at = None

    progress = Progress.from_counts(
        total=figures.total, done=figures.embedded, queued=figures.queued + figures.pending,
        processing=figures.processing, failed=figures.failed, dlq=figures.dlq)
    running = verdict.phase in (Phase.ADMITTED, Phase.RUNNING)
    eta = format_eta(figures.work / rate) if running and rate and figures.work else None
    conditions: list[Condition] = []  # merged into the old ones at the end

    def condition(type_: ConditionType, true: bool, reason: str, message: str) -> None:
        conditions.append(Condition(
            type=type_.value, status=ConditionStatus.TRUE if true else ConditionStatus.FALSE,
            reason=reason, message=message[:1000], last_transition_time=now,
            observed_generation=backfill.generation))

    phase = verdict.phase
    condition(ConditionType.ADMITTED, running, verdict.reason, verdict.message)
    condition(ConditionType.RUNNING, phase is Phase.RUNNING, verdict.reason, verdict.message)
    condition(ConditionType.COMPLETE, phase is Phase.SUCCEEDED,
              verdict.reason if phase is Phase.SUCCEEDED else "NotComplete",
              verdict.message if phase is Phase.SUCCEEDED else f"{figures.work} rows to embed")
    condition(ConditionType.FAILED, phase is Phase.FAILED,
              verdict.reason if phase is Phase.FAILED else "NotFailed",
              verdict.message if phase is Phase.FAILED else "")
    condition(ConditionType.SUSPENDED, phase is Phase.SUSPENDED,
              "Suspended" if phase is Phase.SUSPENDED else "NotSuspended",
              verdict.message if phase is Phase.SUSPENDED else "")
    events += _phase_events(old.phase, verdict, job_name)
    if verdict.failed_jobs > (old.failed_jobs or 0) and phase is not Phase.FAILED \
            and verdict.job is not None:
        # Counted now and retried (possibly admitted in the same decision): say so once.
        job = verdict.job
        events.append(EventNote(WARNING, "Retrying",
                                f"Job {job.name} failed ({job.reason or 'JobFailed'}: "
                                f"{job.message or 'no message'}); retry {verdict.failed_jobs}"))

    unresolved = figures.unresolved_dlq
    level = ("Critical" if unresolved >= thresholds.dlq_critical
             else "Warning" if unresolved >= thresholds.dlq_warning else None)
    old_dlq = old.condition(ConditionType.DLQ_GROWING)
    old_level = old_dlq.reason if old_dlq is not None and old_dlq.is_true else None
    limit = thresholds.dlq_critical if level == "Critical" else thresholds.dlq_warning
    condition(ConditionType.DLQ_GROWING, level is not None,
              f"Above{level}" if level else "BelowThreshold",
              f"{unresolved} unresolved dead letters (threshold {limit})" if level
              else f"{unresolved} unresolved dead letters")
    if level is not None and f"Above{level}" != old_level and \
            not (level == "Warning" and old_level == "AboveCritical"):
        events.append(EventNote(WARNING, "DLQGrowing",
                                f"{unresolved} unresolved dead letters, past the "
                                f"{level.lower()} threshold of {limit}"))
    elif level is None and old_level is not None:
        events.append(EventNote(NORMAL, "DLQRecovered",
                                f"{unresolved} unresolved dead letters, under the threshold"))

    if drift is not None:
        stale = drift.stale_rows
        old_drift = old.condition(ConditionType.DRIFT)
        condition(ConditionType.DRIFT, stale > 0, "StaleRows" if stale else "InSync",
                  f"{stale} rows older than their source" if stale
                  else "search_index is in sync with its sources")
        if stale and (old_drift is None or not old_drift.is_true):
            events.append(EventNote(WARNING, "Drift",
                                    f"{stale} search_index rows are older than their source "
                                    "records plus the tolerance"))
    status = BackfillStatus(
        phase=verdict.phase,
        queue_position=verdict.queue_position,
        effective_priority=backfill.spec.effective_priority if backfill.spec else None,
        job_name=job_name or old.job_name,
        admissions=admissions,
        failed_jobs=verdict.failed_jobs,
        started_at=started_at,
        completed_at=completed_at,
        progress=progress,
        rate=round(rate, 1) if running and rate is not None else None,
        eta=eta,
        dlq=DlqStatus(unresolved=figures.unresolved_dlq,
                      replayed=old.dlq.replayed if old.dlq else None,
                      abandoned=old.dlq.abandoned if old.dlq else None),
        drift=_drift(old.drift, drift, now),
        observed_generation=backfill.generation,
        conditions=merge_conditions(old.conditions, conditions),
    )
    return status, events


# A drift check every minute must not rewrite every status: the check time is written when
# the count changes, and otherwise only this often (the operator's f1_drift_stale_rows
# metric is current at every check).
DRIFT_STAMP_REFRESH = timedelta(minutes=15)


def _drift(old: DriftStatus | None, new: DriftStatus | None, now: datetime
           ) -> DriftStatus | None:
    if new is None or old is None or old.stale_rows != new.stale_rows:
        return new or old
    if old.last_checked_at is None or now - old.last_checked_at >= DRIFT_STAMP_REFRESH:
        return new
    return old


def _phase_events(old: Phase | None, verdict: Verdict, job_name: str | None) -> list[EventNote]:
    new = verdict.phase
    if old is new and verdict.admit is None:  # a new admission is news in any phase
        return []
    events = []
    if old is Phase.SUSPENDED:
        events.append(EventNote(NORMAL, "Resumed", f"resumed: {verdict.message}"))
    if new is Phase.ADMITTED:
        events.append(EventNote(NORMAL, "Admitted", f"created Job {job_name}"))
    elif new is Phase.RUNNING and old is not Phase.ADMITTED:
        events.append(EventNote(NORMAL, "Running", verdict.message))
    elif new is Phase.SUCCEEDED:
        events.append(EventNote(NORMAL, "Completed", verdict.message))
    elif new is Phase.FAILED:
        events.append(EventNote(WARNING, verdict.reason or "Failed", verdict.message))
    elif new is Phase.SUSPENDED:
        events.append(EventNote(NORMAL, "Suspended", "suspended; its Job is stopped"))
    return events


def status_patch(old: BackfillStatus, new: BackfillStatus) -> dict | None:
    """The merge patch from `old` to `new`, or None when nothing changed.

    Unset fields are written as null so that a merge patch removes them (a queue position
    disappears once admitted).
    """
    if old == new:
        return None
    return new.changed_since(old) or None
