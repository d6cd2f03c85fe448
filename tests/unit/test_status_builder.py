"""f1backfill.builders.status: verdict + database figures -> status, conditions, Events."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from f1backfill.admission import JobState, ObservedBackfill, Verdict
from f1backfill.api import BackfillStatus, DriftStatus, Phase
from f1backfill.builders.status import (
    NO_ACTIONS,
    Actions,
    EventNote,
    Thresholds,
    build_status,
    format_eta,
    job_completed,
    stalled_status,
    status_patch,
)
from f1backfill.constants import ConditionType
from f1backfill.db.figures import YachtFigures
from f1sandbox.crd import admit
from f1sandbox.merge import merge_patch
from tests.support.backfills import T0, backfill, job_of, settings
from tests.support.crd_cases import MINIMAL_SPEC, SCHEMA, make_cr

DEFAULTS = settings()
THRESHOLDS = Thresholds(DEFAULTS.dlq_warning, DEFAULTS.dlq_critical)
JOB = "yb-lady-marina-0123456789"

QUEUED = Verdict(Phase.QUEUED, "Waiting", "waiting for a free slot (1 at a time)",
                 queue_position=2)
PENDING = Verdict(Phase.PENDING, "NoWork", "no rows of the yacht need an embedding")
ADMITTED = Verdict(Phase.ADMITTED, "Admitted", "admitted (Job 1 of this backfill)", admit=1)
CREATED = Verdict(Phase.ADMITTED, "JobCreated", f"Job {JOB} is pending")
RUNNING = Verdict(Phase.RUNNING, "JobRunning", f"Job {JOB} is active")
SUCCEEDED = Verdict(Phase.SUCCEEDED, "QueueDrained",
                    "every row of the yacht is embedded or dead-lettered")
FAILED = Verdict(Phase.FAILED, "BackoffLimitExceeded",
                 f"Job {JOB} failed: Job has reached the specified backoff limit", failed_jobs=2)
SUSPENDED = Verdict(Phase.SUSPENDED, "Suspended", "spec.suspend is true")

CONDITION_TYPES = {"Admitted", "Running", "Complete", "Failed", "Suspended", "DLQGrowing"}


def step(b: ObservedBackfill, verdict: Verdict, figures: YachtFigures | None = None, *,
         minutes: int = 0, rate: float | None = None, drift: DriftStatus | None = None,
         job_name: str | None = JOB, actions: Actions = NO_ACTIONS,
         ) -> tuple[ObservedBackfill, list[EventNote]]:
    """Build the status, store it as the cluster would (JSON, to the second) and observe it."""
    status, events = build_status(b, verdict, figures, rate=rate, drift=drift,
                                  thresholds=THRESHOLDS, job_name=job_name,
                                  now=T0 + timedelta(minutes=minutes), actions=actions)
    return stored(b, status), events


def stored(b: ObservedBackfill, status: BackfillStatus) -> ObservedBackfill:
    return replace(b, status=BackfillStatus.from_dict(status.to_dict()))


def running() -> ObservedBackfill:
    """A backfill already Running, so that only the figures under test raise Events."""
    return backfill(status={"phase": "Running"})


def kinds(events: list[EventNote]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in events]


def conditions(b: ObservedBackfill) -> dict[str, tuple[str, str]]:
    return {c.type: (str(c.status), c.reason) for c in b.status.conditions}


# --- Conditions ---------------------------------------------------------------------------------


def test_conditions_follow_the_kubernetes_convention() -> None:
    b, _ = step(backfill(generation=4), QUEUED)
    raw = b.status.to_dict()["conditions"]
    assert {c["type"] for c in raw} == CONDITION_TYPES
    for c in raw:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime",
                          "observedGeneration"}
        assert c["status"] in ("True", "False")
        assert c["lastTransitionTime"] == "2025-01-31T12:00:00Z"
        assert c["observedGeneration"] == 4
    assert b.status.observed_generation == 4
    # Reasons, messages and all: what the API server takes (metav1.Condition's patterns).
    admit(SCHEMA, {**make_cr(MINIMAL_SPEC), "status": b.status.to_dict()})


@pytest.mark.parametrize(("verdict", "true"), [
    (QUEUED, set()), (PENDING, set()), (ADMITTED, {"Admitted"}), (CREATED, {"Admitted"}),
    (RUNNING, {"Admitted", "Running"}), (SUCCEEDED, {"Complete"}), (FAILED, {"Failed"}),
    (SUSPENDED, {"Suspended"}),
])
def test_the_phase_decides_which_conditions_are_true(verdict: Verdict, true: set[str]) -> None:
    b, _ = step(backfill(), verdict)
    assert b.status.phase is verdict.phase
    assert {t for t, (status, _) in conditions(b).items() if status == "True"} == true


def test_a_failed_condition_carries_the_jobs_reason() -> None:
    b, _ = step(backfill(), FAILED)
    failed = b.status.condition(ConditionType.FAILED)
    assert (failed.reason, failed.message) == (FAILED.reason, FAILED.message)


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    b, _ = step(backfill(), QUEUED, minutes=0)
    b, _ = step(b, ADMITTED, minutes=1)
    b, _ = step(b, CREATED, minutes=2)  # new reason and message, same status
    b, _ = step(b, RUNNING, minutes=3)
    b, _ = step(b, replace(RUNNING, message="still running"), minutes=4)
    times = {c.type: c.last_transition_time for c in b.status.conditions}
    assert times["Admitted"] == T0 + timedelta(minutes=1)
    assert times["Running"] == T0 + timedelta(minutes=3)
    assert times["Complete"] == T0
    admitted = b.status.condition("Admitted")
    assert (admitted.reason, admitted.message) == ("JobRunning", "still running")


def test_conditions_record_the_generation_they_were_computed_for() -> None:
    b, _ = step(backfill(generation=1), RUNNING)
    b, _ = step(replace(b, generation=2), RUNNING, minutes=1)
    assert {c.observed_generation for c in b.status.conditions} == {2}
    assert b.status.condition("Running").last_transition_time == T0


def test_condition_messages_are_capped() -> None:
    b, _ = step(backfill(), replace(FAILED, message="x" * 5000))
    assert len(b.status.condition("Failed").message) == 1000


def test_the_condition_order_is_stable() -> None:
    b, _ = step(backfill(), QUEUED)
    order = [c.type for c in b.status.conditions]
    for verdict in (ADMITTED, RUNNING, SUCCEEDED, QUEUED):
        b, _ = step(b, verdict, minutes=1)
        assert [c.type for c in b.status.conditions] == order


# --- Phase Events -------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "verdict", "expected"), [
    (None, QUEUED, []),
    (None, PENDING, []),
    (Phase.QUEUED, ADMITTED, [("Normal", "Admitted")]),
    (Phase.PENDING, ADMITTED, [("Normal", "Admitted")]),
    (Phase.SUCCEEDED, ADMITTED, [("Normal", "Admitted")]),
    (Phase.ADMITTED, RUNNING, []),
    (Phase.RUNNING, SUCCEEDED, [("Normal", "Completed")]),
    (Phase.RUNNING, FAILED, [("Warning", "BackoffLimitExceeded")]),
    (Phase.ADMITTED, FAILED, [("Warning", "BackoffLimitExceeded")]),
    (Phase.RUNNING, SUSPENDED, [("Normal", "Suspended")]),
    (Phase.QUEUED, SUSPENDED, [("Normal", "Suspended")]),
    (Phase.SUSPENDED, QUEUED, [("Normal", "Resumed")]),
    (Phase.SUSPENDED, PENDING, [("Normal", "Resumed")]),
    (Phase.SUSPENDED, ADMITTED, [("Normal", "Resumed"), ("Normal", "Admitted")]),
], ids=lambda v: v.phase.value if isinstance(v, Verdict) else str(v))
def test_a_phase_transition_raises_its_event(
        old: Phase | None, verdict: Verdict, expected: list[tuple[str, str]]) -> None:
    b = backfill(status=BackfillStatus(phase=old))
    _, events = build_status(b, verdict, None, rate=None, drift=None, thresholds=THRESHOLDS,
                             job_name=JOB, now=T0)
    assert kinds(events) == expected


def test_the_admitted_event_names_the_job() -> None:
    _, events = step(backfill(status={"phase": "Queued"}), ADMITTED, job_name=JOB)
    assert JOB in events[0].message


@pytest.mark.parametrize("verdict", [QUEUED, PENDING, CREATED, RUNNING, SUCCEEDED, FAILED,
                                     SUSPENDED], ids=lambda v: v.phase.value)
def test_an_unchanged_phase_raises_no_event(verdict: Verdict) -> None:
    b, _ = step(backfill(), verdict)
    again, events = step(b, verdict, minutes=5)
    assert events == []
    assert status_patch(b.status, again.status) is None


def test_each_transition_raises_its_event_once() -> None:
    b = backfill()
    seen: list[tuple[str, str]] = []
    for minute, verdict in enumerate(
            [QUEUED, QUEUED, ADMITTED, CREATED, RUNNING, RUNNING, SUSPENDED, SUSPENDED,
             QUEUED, ADMITTED, RUNNING, SUCCEEDED, SUCCEEDED]):
        b, events = step(b, verdict, minutes=minute)
        seen += kinds(events)
    assert seen == [("Normal", "Admitted"), ("Normal", "Suspended"), ("Normal", "Resumed"),
                    ("Normal", "Admitted"), ("Normal", "Completed")]


def test_a_new_admission_without_a_phase_change_is_announced() -> None:
    # Job 1 finished before the operator saw it run; Job 2 is admitted at once: the phase
    # stays Admitted, but it is a new Job.
    b, _ = step(backfill(), ADMITTED)
    _, events = step(b, replace(ADMITTED, admit=2), job_name="yb-lady-marina-9876543210",
                     minutes=1)
    assert kinds(events) == [("Normal", "Admitted")]
    assert "yb-lady-marina-9876543210" in events[0].message


# --- Dead letters -------------------------------------------------------------------------------


def test_dlq_growing_raises_events_only_when_a_threshold_is_crossed() -> None:
    assert (THRESHOLDS.dlq_warning, THRESHOLDS.dlq_critical) == (100, 1000)
    b = running()
    trail = []
    for minute, unresolved in enumerate(
            [0, 99, 100, 150, 999, 1000, 1500, 500, 99, 0, 120, 2000]):
        b, events = step(b, RUNNING, YachtFigures(unresolved_dlq=unresolved), minutes=minute)
        growing = b.status.condition(ConditionType.DLQ_GROWING)
        trail.append((unresolved, str(growing.status), growing.reason,
                      [(e.type, e.reason) for e in events]))
        assert b.status.dlq.unresolved == unresolved
    assert trail == [
        (0, "False", "BelowThreshold", []),
        (99, "False", "BelowThreshold", []),
        (100, "True", "AboveWarning", [("Warning", "DLQGrowing")]),
        (150, "True", "AboveWarning", []),
        (999, "True", "AboveWarning", []),
        (1000, "True", "AboveCritical", [("Warning", "DLQGrowing")]),
        (1500, "True", "AboveCritical", []),
        (500, "True", "AboveWarning", []),
        (99, "False", "BelowThreshold", [("Normal", "DLQRecovered")]),
        (0, "False", "BelowThreshold", []),
        (120, "True", "AboveWarning", [("Warning", "DLQGrowing")]),
        (2000, "True", "AboveCritical", [("Warning", "DLQGrowing")]),
    ]


def test_dlq_events_say_which_threshold_was_crossed() -> None:
    b, warning = step(running(), RUNNING, YachtFigures(unresolved_dlq=100))
    _, critical = step(b, RUNNING, YachtFigures(unresolved_dlq=1000), minutes=1)
    assert "warning threshold of 100" in warning[0].message
    assert "critical threshold of 1000" in critical[0].message


def test_dlq_thresholds_are_the_ones_given() -> None:
    b = running()
    _, events = build_status(b, RUNNING, YachtFigures(unresolved_dlq=10), rate=None,
                             drift=None, thresholds=Thresholds(5, 50), job_name=JOB, now=T0)
    assert kinds(events) == [("Warning", "DLQGrowing")]


# --- Drift --------------------------------------------------------------------------------------


def test_drift_raises_a_condition_and_one_warning_when_stale_rows_appear() -> None:
    checked = T0 + timedelta(minutes=1)
    b, events = step(running(), RUNNING, drift=DriftStatus(0, checked))
    assert conditions(b)["Drift"] == ("False", "InSync") and events == []
    b, events = step(b, RUNNING, drift=DriftStatus(12, checked), minutes=1)
    assert conditions(b)["Drift"] == ("True", "StaleRows")
    assert kinds(events) == [("Warning", "Drift")] and "12" in events[0].message
    assert b.status.drift == DriftStatus(12, checked)
    b, events = step(b, RUNNING, drift=DriftStatus(30, checked), minutes=2)
    assert events == []
    b, events = step(b, RUNNING, drift=DriftStatus(0, checked), minutes=3)
    assert conditions(b)["Drift"] == ("False", "InSync") and events == []
    b, events = step(b, RUNNING, drift=DriftStatus(1, checked), minutes=4)
    assert kinds(events) == [("Warning", "Drift")]


def test_no_drift_reading_keeps_the_last_one() -> None:
    b, _ = step(running(), RUNNING, drift=DriftStatus(3, T0))
    kept, events = step(b, RUNNING, drift=None, minutes=1)
    assert kept.status.drift == DriftStatus(3, T0)
    assert conditions(kept)["Drift"] == ("True", "StaleRows") and events == []
    fresh, _ = step(backfill(), RUNNING, drift=None)
    assert fresh.status.condition(ConditionType.DRIFT) is None


# --- A yacht's second backfill, an empty yacht ----------------------------------------------------


DUPLICATE = Verdict(Phase.PENDING, "DuplicateYacht",
                    "yacht 28191ed2 is handled by YachtBackfill fleet/aurora")


def test_a_twin_backfill_is_told_once_which_backfill_handles_its_yacht() -> None:
    b, events = step(backfill(), DUPLICATE)
    assert kinds(events) == [("Warning", "DuplicateYacht")]
    assert events[0].message == DUPLICATE.message
    assert conditions(b)["Admitted"] == ("False", "DuplicateYacht")
    assert b.status.phase is Phase.PENDING
    _, events = step(b, DUPLICATE, minutes=1)
    assert events == []


def test_an_empty_yacht_is_complete_with_reason_no_rows() -> None:
    empty = Verdict(Phase.SUCCEEDED, "NoRows",
                    "the yacht has no rows in search_index: nothing to embed")
    b, events = step(backfill(), empty, YachtFigures())
    assert conditions(b)["Complete"] == ("True", "NoRows")
    assert b.status.progress.total == 0 and b.status.completed_at is not None
    assert kinds(events) == [("Normal", "Completed")]


# --- What a tick did besides deciding: annotations, drift re-queues -------------------------------


def test_dead_letters_acted_on_are_recorded_and_announced_once() -> None:
    b, events = step(running(), RUNNING, actions=Actions(replayed="1700000000",
                                                         replayed_count=7))
    assert b.status.dlq.replayed == "1700000000"
    assert kinds(events) == [("Normal", "DeadLettersReplayed")]
    assert events[0].message == ("re-queued 7 dead letters of the yacht "
                                 "(f1cortex.io/replay-dead-letters=1700000000)")
    b, events = step(b, RUNNING, minutes=1)  # the next tick acts on nothing
    assert (b.status.dlq.replayed, events) == ("1700000000", [])
    b, events = step(b, RUNNING, actions=Actions(abandoned="x", abandoned_count=0))
    assert (b.status.dlq.replayed, b.status.dlq.abandoned) == ("1700000000", "x")
    assert kinds(events) == [("Normal", "DeadLettersAbandoned")]


def test_stale_rows_requeued_by_drift_are_announced() -> None:
    _, events = step(running(), RUNNING, actions=Actions(requeued_stale=3))
    assert kinds(events) == [("Normal", "DriftRequeued")]
    assert events[0].message == "re-queued 3 stale rows for embedding (drift.autoRequeue)"


# --- Stalled: a permanent error blocks reconciliation -------------------------------------------


def test_a_stall_sets_only_its_condition_and_warns_once_per_reason() -> None:
    b, _ = step(running(), RUNNING)
    status, events = stalled_status(b, "SchemaNotReady", "run `f1backfill migrate`", T0)
    assert kinds(events) == [("Warning", "Stalled")]
    assert status.phase is Phase.RUNNING and status.progress == b.status.progress
    stalled = stored(b, status)
    assert conditions(stalled)["Stalled"] == ("True", "SchemaNotReady")
    again, events = stalled_status(stalled, "SchemaNotReady", "run `f1backfill migrate`", T0)
    assert events == [] and again == stalled.status
    _, events = stalled_status(stalled, "KubeRefused", "403 Forbidden", T0)
    assert kinds(events) == [("Warning", "Stalled")]


def test_the_next_status_built_clears_a_stall_and_a_backfill_never_stalled_has_no_such_condition(
) -> None:
    b, _ = step(running(), RUNNING)
    assert "Stalled" not in conditions(b)
    status, _ = stalled_status(b, "SchemaNotReady", "run `f1backfill migrate`", T0)
    b, _ = step(stored(b, status), RUNNING, minutes=1)
    assert conditions(b)["Stalled"] == ("False", "Reconciled")


# --- Progress, rate, ETA ------------------------------------------------------------------------


def test_progress_counts_rows_by_status_and_their_percentage() -> None:
    figures = YachtFigures(total=200, embedded=50, pending=30, queued=20, processing=10,
                           failed=5, dlq=85)
    b, _ = step(backfill(), RUNNING, figures)
    p = b.status.progress
    assert (p.total, p.done, p.queued, p.processing, p.failed, p.dlq, p.percent) == (
        200, 50, 50, 10, 5, 85, 25.0)
    assert figures.work == 65


@pytest.mark.parametrize(("total", "done", "percent"), [
    (0, 0, 100.0), (3, 1, 33.3), (3, 3, 100.0), (5000, 2500, 50.0), (5000, 4990, 99.8)])
def test_progress_percent(total: int, done: int, percent: float) -> None:
    b, _ = step(backfill(), RUNNING, YachtFigures(total=total, embedded=done))
    assert b.status.progress.percent == percent


@pytest.mark.parametrize(("minutes", "text"), [
    (None, None), (0, "0s"), (0.5, "30s"), (0.99, "59s"), (1, "1m"), (59.5, "59m"),
    (60, "1h00m"), (61, "1h01m"), (125.5, "2h05m"), (48 * 60, "48h00m")])
def test_format_eta(minutes: float | None, text: str | None) -> None:
    assert format_eta(minutes) == text


def test_eta_and_rate_are_shown_only_while_a_job_runs() -> None:
    figures = YachtFigures(total=1000, embedded=400, queued=600)
    b, _ = step(backfill(), RUNNING, figures, rate=120.04)
    assert (b.status.rate, b.status.eta) == (120.0, "5m")
    for verdict in (QUEUED, SUCCEEDED, SUSPENDED):
        stopped, _ = step(b, verdict, figures, rate=120.0, minutes=1)
        assert (stopped.status.rate, stopped.status.eta) == (None, None)
    idle, _ = step(backfill(), RUNNING, figures, rate=0.0)
    assert idle.status.eta is None
    unknown, _ = step(backfill(), RUNNING, figures, rate=None)
    assert (unknown.status.rate, unknown.status.eta) == (None, None)


# --- Bookkeeping --------------------------------------------------------------------------------


def test_a_job_ends_when_the_stored_status_still_shows_it_and_it_is_over() -> None:
    b = backfill()
    first, second = job_of(b, 1, JobState.SUCCEEDED), job_of(b, 2, JobState.FAILED)
    shown = {"admissions": 1, "jobName": first.name}
    for phase in ("Admitted", "Running"):
        stored_status = BackfillStatus.from_dict({"phase": phase, **shown})
        assert job_completed(stored_status, replace(SUCCEEDED, job=first))
        assert job_completed(stored_status, replace(FAILED, job=first))
        # Over, with rows queued meanwhile: Queued (or admitted again) after its Job.
        assert job_completed(stored_status, replace(QUEUED, job=first))
        assert job_completed(stored_status, replace(ADMITTED, admit=2, job=first))
        # Still running, or the Job it recorded is not the one that is over.
        assert not job_completed(stored_status, replace(RUNNING, job=job_of(b)))
        assert not job_completed(stored_status, replace(QUEUED, job=second))
        assert not job_completed(stored_status, replace(SUSPENDED, job=None))
    for phase in ("Succeeded", "Failed", "Queued", "Pending", "Suspended", None):
        stored_status = BackfillStatus.from_dict({"phase": phase, **shown} if phase else {})
        assert not job_completed(stored_status, replace(SUCCEEDED, job=first)), phase


def test_an_admission_records_the_job_the_count_and_the_start() -> None:
    b, _ = step(backfill(status={"phase": "Queued", "queuePosition": 1, "admissions": 2}),
                replace(ADMITTED, admit=3), job_name=JOB, minutes=7)
    s = b.status
    assert (s.phase, s.job_name, s.admissions, s.queue_position) == (
        Phase.ADMITTED, JOB, 3, None)
    assert s.started_at == T0 + timedelta(minutes=7) and s.completed_at is None
    later, _ = step(b, RUNNING, job_name=None, minutes=9)
    assert later.status.job_name == JOB
    assert later.status.started_at == T0 + timedelta(minutes=7)


def test_completion_is_stamped_once_and_cleared_by_the_next_run() -> None:
    b, _ = step(backfill(), ADMITTED)
    b, _ = step(b, SUCCEEDED, minutes=10)
    done = T0 + timedelta(minutes=10)
    assert b.status.completed_at == done
    b, _ = step(b, SUCCEEDED, minutes=20)
    assert b.status.completed_at == done
    b, _ = step(b, QUEUED, minutes=30)
    assert b.status.completed_at is None


def test_a_job_found_after_a_restart_starts_a_new_run() -> None:
    # The operator created Job 2 and died before recording it; the status still shows run 1.
    b, _ = step(backfill(spec={"mode": "Continuous"}), ADMITTED)
    b, _ = step(b, SUCCEEDED, minutes=10)
    job = job_of(b, 2, JobState.PENDING)
    b, events = step(b, replace(CREATED, job=job), job_name=job.name, minutes=20)
    s = b.status
    assert (s.phase, s.admissions, s.job_name) == (Phase.ADMITTED, 2, job.name)
    assert s.started_at == T0 + timedelta(minutes=20)
    assert s.completed_at is None
    assert kinds(events) == [("Normal", "Admitted")]


def test_the_status_survives_the_round_trip_through_the_cluster() -> None:
    figures = YachtFigures(total=100, embedded=40, queued=60, unresolved_dlq=150)
    status, _ = build_status(backfill(spec={"tier": "premium"}), RUNNING, figures, rate=30.0,
                             drift=DriftStatus(2, T0), thresholds=THRESHOLDS, job_name=JOB,
                             now=T0)
    assert BackfillStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status
    assert status.effective_priority == 50


# --- The patch ----------------------------------------------------------------------------------


def test_no_patch_when_nothing_changed() -> None:
    b, _ = step(backfill(), RUNNING, YachtFigures(total=10, embedded=5, queued=5), rate=5.0)
    again, _ = step(b, RUNNING, YachtFigures(total=10, embedded=5, queued=5), rate=5.0,
                    minutes=3)
    assert status_patch(b.status, again.status) is None


def test_the_patch_holds_only_what_changed_and_nulls_what_was_cleared() -> None:
    b, _ = step(backfill(), QUEUED, YachtFigures(total=10, queued=10))
    assert b.status.queue_position == 2
    admitted, _ = step(b, ADMITTED, YachtFigures(total=10, queued=10), minutes=1)
    patch = status_patch(b.status, admitted.status)
    assert patch is not None
    assert patch["queuePosition"] is None
    assert patch["phase"] == "Admitted"
    assert "progress" not in patch and "effectivePriority" not in patch
    json.dumps(patch)  # a plain JSON document
    stored = merge_patch(b.status.to_dict(), patch)
    assert "queuePosition" not in stored
    assert BackfillStatus.from_dict(stored) == admitted.status


def test_a_first_status_is_written_whole() -> None:
    b = backfill()
    status, _ = build_status(b, QUEUED, YachtFigures(total=3, queued=3), rate=None,
                             drift=None, thresholds=THRESHOLDS, job_name=None, now=T0)
    patch = status_patch(b.status, status)
    assert patch is not None
    assert BackfillStatus.from_dict(merge_patch({}, patch)) == status
