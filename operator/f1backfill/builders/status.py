"""(observed backfill, verdict, database figures) -> desired status and the Events that its
transitions deserve. Pure: the clock is a parameter.

Events fade after about an hour; conditions stay. So every Event here is raised on a
transition of the status it is compared with, which is the status stored in the cluster:
a restarted operator neither repeats nor forgets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..admission import DUPLICATE_YACHT, ObservedBackfill, Verdict
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
from ..constants import (
    ANNOTATION_ABANDON_DEAD_LETTERS,
    ANNOTATION_REPLAY_DEAD_LETTERS,
    ConditionType,
)
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


@dataclass(frozen=True)
class Actions:
    """What this tick did to a backfill's yacht besides deciding: dead letters replayed or
    abandoned for an annotation (its value is recorded in `status.dlq`, so a restarted
    operator does not act on it twice), stale rows re-queued by drift.autoRequeue."""

    replayed: str | None = None  # the value of the replay annotation acted on
    replayed_count: int = 0
    abandoned: str | None = None  # the value of the abandon annotation acted on
    abandoned_count: int = 0
    requeued_stale: int = 0


NO_ACTIONS = Actions()


class _Conditions:
    """The conditions one status build sets, all at one time and generation."""

    def __init__(self, now: datetime, generation: int) -> None:
        self.now = now
        self.generation = generation
        self.items: list[Condition] = []

    def set(self, type_: ConditionType, true: bool, reason: str, message: str) -> None:
        self.items.append(Condition(
            type=type_.value, status=ConditionStatus.TRUE if true else ConditionStatus.FALSE,
            reason=reason, message=message[:1000], last_transition_time=self.now,
            observed_generation=self.generation))


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
    actions: Actions = NO_ACTIONS,
) -> tuple[BackfillStatus, list[EventNote]]:
    """The status a backfill should have after this decision, and the Events its
    transitions (against the stored status) deserve."""
    old = backfill.status
    figures = figures or YachtFigures()
    conditions = _Conditions(now, backfill.generation)
    admissions, started_at, completed_at = _run_times(old, verdict, now)
    running = verdict.phase in (Phase.ADMITTED, Phase.RUNNING)
    events = [
        *_phase(conditions, old, verdict, figures, job_name),
        *_dead_letters(conditions, old, figures.unresolved_dlq, thresholds),
        *_drift_condition(conditions, old, drift),
        *_action_events(actions),
    ]
    stalled = old.condition(ConditionType.STALLED)
    if stalled is not None and stalled.is_true:  # this reconciliation went through
        conditions.set(ConditionType.STALLED, False, "Reconciled",
                       "the last reconciliation went through")
    status = BackfillStatus(
        phase=verdict.phase,
        queue_position=verdict.queue_position,
        effective_priority=backfill.spec.effective_priority if backfill.spec else None,
        job_name=job_name or old.job_name,
        admissions=admissions,
        failed_jobs=verdict.failed_jobs,
        started_at=started_at,
        completed_at=completed_at,
        progress=Progress.from_counts(
            total=figures.total, done=figures.embedded,
            queued=figures.queued + figures.pending, processing=figures.processing,
            failed=figures.failed, dlq=figures.dlq),
        rate=round(rate, 1) if running and rate is not None else None,
        eta=format_eta(figures.work / rate) if running and rate and figures.work else None,
        dlq=DlqStatus(
            unresolved=figures.unresolved_dlq,
            replayed=_token(actions.replayed) or (old.dlq.replayed if old.dlq else None),
            abandoned=_token(actions.abandoned) or (old.dlq.abandoned if old.dlq else None)),
        drift=_drift(old.drift, drift, now),
        observed_generation=backfill.generation,
        conditions=merge_conditions(old.conditions, conditions.items),
    )
    return status, events


def stalled_status(backfill: ObservedBackfill, reason: str, message: str, now: datetime
                   ) -> tuple[BackfillStatus, list[EventNote]]:
    """The stored status with `Stalled=True`: a permanent error blocks this backfill's
    reconciliation (a database never migrated, a request the API server refuses) until a
    person acts. Nothing else changes: the phase is what the last decision said."""
    old = backfill.status
    conditions = _Conditions(now, backfill.generation)
    conditions.set(ConditionType.STALLED, True, reason, message)
    status = old.with_conditions(conditions.items)
    was = old.condition(ConditionType.STALLED)
    news = was is None or not was.is_true or was.reason != reason
    return status, [EventNote(WARNING, "Stalled", message)] if news else []


def _token(value: str | None) -> str | None:
    return value[:253] if value else None  # status.dlq.replayed's maxLength


def _run_times(old: BackfillStatus, verdict: Verdict, now: datetime
               ) -> tuple[int, datetime | None, datetime | None]:
    """(admissions so far, startedAt, completedAt) after this decision."""
    # A new run: admitted now, or a Job the status has not recorded yet (the operator died
    # between creating it and writing the status).
    job = verdict.job
    admitted_now = verdict.admit is not None or (
        job is not None and not job.finished and job.admission > (old.admissions or 0))
    admissions = max(old.admissions or 0, verdict.admit or 0, job.admission if job else 0)
    started_at = now if admitted_now else old.started_at
    completed_at = old.completed_at
    if verdict.phase in (Phase.SUCCEEDED, Phase.FAILED):
        if old.phase is not verdict.phase or completed_at is None:
            completed_at = now
    elif admitted_now or verdict.phase is Phase.QUEUED:
        completed_at = None
    return admissions, started_at, completed_at


def _phase(conditions: _Conditions, old: BackfillStatus, verdict: Verdict,
           figures: YachtFigures, job_name: str | None) -> list[EventNote]:
    """The five conditions that follow the phase, and the Events of its transition."""
    phase = verdict.phase
    running = phase in (Phase.ADMITTED, Phase.RUNNING)
    succeeded, failed, suspended = (phase is Phase.SUCCEEDED, phase is Phase.FAILED,
                                    phase is Phase.SUSPENDED)
    conditions.set(ConditionType.ADMITTED, running, verdict.reason, verdict.message)
    conditions.set(ConditionType.RUNNING, phase is Phase.RUNNING, verdict.reason,
                   verdict.message)
    conditions.set(ConditionType.COMPLETE, succeeded,
                   verdict.reason if succeeded else "NotComplete",
                   verdict.message if succeeded else f"{figures.work} rows to embed")
    conditions.set(ConditionType.FAILED, failed, verdict.reason if failed else "NotFailed",
                   verdict.message if failed else "")
    conditions.set(ConditionType.SUSPENDED, suspended,
                   "Suspended" if suspended else "NotSuspended",
                   verdict.message if suspended else "")
    events = _phase_events(old.phase, verdict, job_name)
    old_admitted = old.condition(ConditionType.ADMITTED)
    if verdict.reason == DUPLICATE_YACHT and (old_admitted is None
                                              or old_admitted.reason != DUPLICATE_YACHT):
        # A second backfill of a yacht another one handles: the user should hear why it
        # never runs (once; the condition keeps saying it).
        events.append(EventNote(WARNING, DUPLICATE_YACHT, verdict.message))
    job = verdict.job
    if verdict.failed_jobs > (old.failed_jobs or 0) and not failed and job is not None:
        # Counted now and retried (possibly admitted in the same decision): say so once.
        events.append(EventNote(WARNING, "Retrying",
                                f"Job {job.name} failed ({job.reason or 'JobFailed'}: "
                                f"{job.message or 'no message'}); retry {verdict.failed_jobs}"))
    return events


def _dead_letters(conditions: _Conditions, old: BackfillStatus, unresolved: int,
                  thresholds: Thresholds) -> list[EventNote]:
    """DLQGrowing, at the warning or the critical threshold; an Event when it rises past
    one, and when it falls back under both."""
    level = ("Critical" if unresolved >= thresholds.dlq_critical
             else "Warning" if unresolved >= thresholds.dlq_warning else None)
    old_dlq = old.condition(ConditionType.DLQ_GROWING)
    old_level = old_dlq.reason if old_dlq is not None and old_dlq.is_true else None
    limit = thresholds.dlq_critical if level == "Critical" else thresholds.dlq_warning
    conditions.set(ConditionType.DLQ_GROWING, level is not None,
                   f"Above{level}" if level else "BelowThreshold",
                   f"{unresolved} unresolved dead letters (threshold {limit})" if level
                   else f"{unresolved} unresolved dead letters")
    if level is not None and f"Above{level}" != old_level and \
            not (level == "Warning" and old_level == "AboveCritical"):
        return [EventNote(WARNING, "DLQGrowing",
                          f"{unresolved} unresolved dead letters, past the "
                          f"{level.lower()} threshold of {limit}")]
    if level is None and old_level is not None:
        return [EventNote(NORMAL, "DLQRecovered",
                          f"{unresolved} unresolved dead letters, under the threshold")]
    return []


def _drift_condition(conditions: _Conditions, old: BackfillStatus,
                     drift: DriftStatus | None) -> list[EventNote]:
    """Drift, when a check has run; an Event when rows first go stale."""
    if drift is None:
        return []
    stale = drift.stale_rows
    conditions.set(ConditionType.DRIFT, stale > 0, "StaleRows" if stale else "InSync",
                   f"{stale} rows older than their source" if stale
                   else "search_index is in sync with its sources")
    old_drift = old.condition(ConditionType.DRIFT)
    if stale and (old_drift is None or not old_drift.is_true):
        return [EventNote(WARNING, "Drift",
                          f"{stale} search_index rows are older than their source records "
                          "plus the tolerance")]
    return []


def _action_events(actions: Actions) -> list[EventNote]:
    events = []
    if actions.replayed:
        events.append(EventNote(
            NORMAL, "DeadLettersReplayed",
            f"re-queued {actions.replayed_count} dead letters of the yacht "
            f"({ANNOTATION_REPLAY_DEAD_LETTERS}={actions.replayed})"))
    if actions.abandoned:
        events.append(EventNote(
            NORMAL, "DeadLettersAbandoned",
            f"abandoned {actions.abandoned_count} dead letters of the yacht "
            f"({ANNOTATION_ABANDON_DEAD_LETTERS}={actions.abandoned})"))
    if actions.requeued_stale:
        events.append(EventNote(
            NORMAL, "DriftRequeued",
            f"re-queued {actions.requeued_stale} stale rows for embedding "
            "(drift.autoRequeue)"))
    return events


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


def job_completed(old: BackfillStatus, verdict: Verdict) -> bool:
    """Whether this decision is the first to see the backfill's Job end: the stored status
    still shows it Admitted or Running, and now the backfill is Succeeded or Failed, or the
    Job it recorded has finished (retried, or new work queued meanwhile). Compared with the
    stored status, like the Events: true once per Job, and a restarted operator neither
    repeats nor misses it."""
    if old.phase not in (Phase.ADMITTED, Phase.RUNNING):
        return False
    if verdict.phase in (Phase.SUCCEEDED, Phase.FAILED):
        return True
    job = verdict.job
    return job is not None and job.finished and job.name == old.job_name


def status_patch(old: BackfillStatus, new: BackfillStatus) -> dict | None:
    """The merge patch from `old` to `new`, or None when nothing changed.

    Unset fields are written as null so that a merge patch removes them (a queue position
    disappears once admitted).
    """
    if old == new:
        return None
    return new.changed_since(old) or None
