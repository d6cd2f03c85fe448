"""f1backfill.admission.decide: the fleet-wide queue, from observed state only."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from f1backfill.admission import (
    Decision,
    JobState,
    ObservedBackfill,
    ObservedJob,
    decide,
)
from f1backfill.api import BackfillStatus, Phase, job_name
from f1backfill.builders.job import build_job
from f1backfill.builders.status import (
    EventNote,
    Thresholds,
    build_status,
    job_completed,
    status_patch,
)
from f1backfill.controller.observe import observe_job
from f1backfill.db.figures import YachtFigures
from f1sandbox.merge import merge_patch
from tests.support.backfills import T0, backfill, job_of, settings, yacht_id

Y1, Y2, Y3 = yacht_id(1), yacht_id(2), yacht_id(3)


def run(backfills: Sequence[ObservedBackfill], jobs: Sequence[ObservedJob] = (),
        work: Mapping[str, int] | None = None, *, max_concurrent_jobs: int = 1,
        job_retries: int = 1, **options: Any) -> Decision:
    if work is None:  # every yacht has something to do
        work = {b.spec.yacht_id: 100 for b in backfills if b.spec is not None}
    return decide(backfills, jobs, work, max_concurrent_jobs=max_concurrent_jobs,
                  job_retries=job_retries, **options)


def admitted(decision: Decision) -> list[str]:
    return [b.name for b, _ in decision.admit]


def positions(decision: Decision, backfills: list[ObservedBackfill]) -> dict[str, int | None]:
    return {b.name: decision.verdicts[b.uid].queue_position for b in backfills}


class Fleet:
    """A cluster in miniature, driven the way the reconciler drives it, without I/O: decide,
    delete Jobs (background propagation: gone at once), create admitted Jobs from their
    manifests, build each status and merge-patch it into the stored JSON, which the next
    tick observes again."""

    def __init__(self, *backfills: ObservedBackfill, work: dict[str, int],
                 max_concurrent_jobs: int = 1, job_retries: int = 1) -> None:
        self.backfills = {b.uid: b for b in backfills}
        self.jobs: dict[str, ObservedJob] = {}
        self.work = dict(work)
        self.max = max_concurrent_jobs
        self.retries = job_retries
        self.settings = settings(max_concurrent_jobs=max_concurrent_jobs,
                                 job_retries=job_retries)
        self.now = T0
        self.created: list[str] = []
        self.events: list[tuple[str, EventNote]] = []
        self.ended: list[str] = []  # a backfill's name each time its Job is seen to end
        self.patches = 0

    def get(self, name: str) -> ObservedBackfill:
        return next(b for b in self.backfills.values() if b.name == name)

    def update(self, name: str, **changes: Any) -> None:
        b = self.get(name)
        self.backfills[b.uid] = replace(b, **changes)

    def job(self, name: str) -> ObservedJob:
        """The latest Job of backfill `name`."""
        uid = self.get(name).uid
        return max((j for j in self.jobs.values() if j.backfill_uid == uid),
                   key=lambda j: j.admission)

    def finish(self, name: str, state: JobState, reason: str = "", message: str = "") -> None:
        job = self.job(name)
        self.jobs[job.name] = replace(job, state=state, reason=reason, message=message)

    def tick(self, *, write_status: bool = True) -> Decision:
        decision = decide(list(self.backfills.values()), list(self.jobs.values()), self.work,
                          max_concurrent_jobs=self.max, job_retries=self.retries)
        for job in decision.delete:
            self.jobs.pop(job.name, None)
        created: dict[str, str] = {}
        for b, admission in decision.admit:
            job = observe_job(build_job(b, admission, self.settings))
            assert job is not None
            assert job.name not in self.jobs, f"a second creation of Job {job.name}"
            self.jobs[job.name] = job
            self.created.append(job.name)
            created[b.uid] = job.name
        self.patches = 0
        for b in list(self.backfills.values()):
            verdict = decision.verdicts.get(b.uid)
            if verdict is not None and job_completed(b.status, verdict):
                self.ended.append(b.name)  # where the reconciler bumps the cache generation
            if verdict is None or not write_status:
                continue
            assert b.spec is not None
            status, events = build_status(
                b, verdict, YachtFigures(total=1000, pending=self.work.get(b.spec.yacht_id, 0)),
                rate=None, drift=None, thresholds=Thresholds(100, 1000),
                job_name=created.get(b.uid) or (verdict.job.name if verdict.job else None),
                now=self.now)
            patch = status_patch(b.status, status)
            if patch is not None:
                self.patches += 1
                stored = merge_patch(b.status.to_dict(), patch)
                self.backfills[b.uid] = replace(b, status=BackfillStatus.from_dict(stored))
                self.events += [(b.name, note) for note in events]
        self.now += timedelta(seconds=5)
        self.check_invariants()
        return decision

    def check_invariants(self) -> None:
        unfinished = [j for j in self.jobs.values() if not j.finished]
        assert len(unfinished) <= self.max
        yachts = [j.yacht_id for j in unfinished]
        assert len(yachts) == len(set(yachts)), "two Jobs for one yacht"
        for job in unfinished:
            owner = self.backfills.get(job.backfill_uid)
            assert owner is not None and not owner.deleting and owner.spec is not None
            assert not owner.spec.suspend

    def phase(self, name: str) -> Phase | None:
        return self.get(name).status.phase


# --- Order ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "priority", "effective"), [
    ("enterprise", None, 100), ("premium", None, 50), ("standard", None, 10),
    ("standard", 500, 500), ("enterprise", 0, 0),
])
def test_effective_priority_is_the_tiers_unless_priority_overrides_it(
        tier: str, priority: int | None, effective: int) -> None:
    spec: dict[str, Any] = {"tier": tier}
    if priority is not None:
        spec["priority"] = priority
    assert backfill(spec=spec).spec.effective_priority == effective


def test_the_highest_effective_priority_is_admitted_first() -> None:
    fleet = [
        backfill("standard", yacht=1, spec={"tier": "standard"}),
        backfill("premium", yacht=2, spec={"tier": "premium"}),
        backfill("enterprise", yacht=3, spec={"tier": "enterprise"}),
        backfill("boosted", yacht=4, spec={"tier": "standard", "priority": 101}),
    ]
    decision = run(fleet)
    assert admitted(decision) == ["boosted"]
    assert positions(decision, fleet) == {
        "boosted": None, "enterprise": 1, "premium": 2, "standard": 3}


def test_equal_priority_orders_by_fewest_rows_needing_work() -> None:
    fleet = [backfill("big", yacht=1), backfill("small", yacht=2), backfill("mid", yacht=3)]
    decision = run(fleet, work={Y1: 5000, Y2: 10, Y3: 300})
    assert admitted(decision) == ["small"]
    assert positions(decision, fleet) == {"small": None, "mid": 1, "big": 2}


def test_equal_priority_and_work_orders_by_creation_time() -> None:
    fleet = [backfill("young", yacht=1, age=30), backfill("old", yacht=2, age=0),
             backfill("middle", yacht=3, age=10)]
    decision = run(fleet, work={Y1: 10, Y2: 10, Y3: 10})
    assert admitted(decision) == ["old"]
    assert positions(decision, fleet) == {"old": None, "middle": 1, "young": 2}


def test_full_ties_order_by_namespace_then_name() -> None:
    fleet = [backfill("a", "zulu", yacht=1), backfill("b", "alpha", yacht=2),
             backfill("a", "alpha", yacht=3)]
    decision = run(fleet, work={Y1: 10, Y2: 10, Y3: 10}, max_concurrent_jobs=1)
    order = sorted(fleet, key=lambda b: decision.verdicts[b.uid].queue_position or 0)
    assert [(b.namespace, b.name) for b in order] == [
        ("alpha", "a"), ("alpha", "b"), ("zulu", "a")]


def test_priority_outranks_work_and_age() -> None:
    fleet = [backfill("old-small", yacht=1, age=0),
             backfill("young-big-premium", yacht=2, age=60, spec={"tier": "premium"})]
    decision = run(fleet, work={Y1: 1, Y2: 1_000_000})
    assert admitted(decision) == ["young-big-premium"]


def test_patching_priority_reorders_the_queue() -> None:
    running = backfill("running", yacht=9, spec={"tier": "enterprise"})
    waiting = [backfill("a", yacht=1), backfill("b", yacht=2), backfill("c", yacht=3)]
    jobs = [job_of(running)]
    before = run([running, *waiting], jobs, work={yacht_id(9): 1, Y1: 10, Y2: 20, Y3: 30})
    assert positions(before, waiting) == {"a": 1, "b": 2, "c": 3}
    waiting[2] = replace(waiting[2], spec=replace(waiting[2].spec, priority=900), generation=2)
    after = run([running, *waiting], jobs, work={yacht_id(9): 1, Y1: 10, Y2: 20, Y3: 30})
    assert positions(after, waiting) == {"c": 1, "a": 2, "b": 3}
    assert after.admit == []


# --- Slots --------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_jobs", [1, 2, 3, 7])
def test_at_most_max_concurrent_jobs_are_admitted(max_jobs: int) -> None:
    fleet = [backfill(f"b{i}", yacht=i) for i in range(10)]
    decision = run(fleet, max_concurrent_jobs=max_jobs)
    assert len(decision.admit) == max_jobs
    assert decision.running == max_jobs


def test_unfinished_jobs_hold_their_slots() -> None:
    fleet = [backfill(f"b{i}", yacht=i) for i in range(6)]
    jobs = [job_of(fleet[4], state=JobState.ACTIVE), job_of(fleet[5], state=JobState.PENDING)]
    decision = run(fleet, jobs, max_concurrent_jobs=3)
    assert len(decision.admit) == 1
    assert decision.running == 3


def test_finished_jobs_free_their_slots() -> None:
    fleet = [backfill(f"b{i}", yacht=i) for i in range(4)]
    jobs = [job_of(fleet[2], state=JobState.SUCCEEDED),
            job_of(fleet[3], state=JobState.FAILED, reason="BackoffLimitExceeded")]
    decision = run(fleet, jobs, work={yacht_id(0): 5, yacht_id(1): 5}, max_concurrent_jobs=2)
    assert sorted(admitted(decision)) == ["b0", "b1"]


def test_a_running_job_is_not_preempted_by_a_higher_priority_backfill() -> None:
    low = backfill("low", yacht=1, spec={"tier": "standard"})
    high = backfill("high", yacht=2, spec={"tier": "enterprise", "priority": 1000})
    decision = run([low, high], [job_of(low)])
    assert decision.admit == []
    assert decision.delete == []
    assert decision.verdicts[low.uid].phase is Phase.RUNNING
    high_verdict = decision.verdicts[high.uid]
    assert (high_verdict.phase, high_verdict.queue_position) == (Phase.QUEUED, 1)
    assert "free slot" in high_verdict.message


def test_lowering_max_concurrent_jobs_stops_nothing_and_admits_nothing() -> None:
    fleet = [backfill(f"b{i}", yacht=i) for i in range(4)]
    jobs = [job_of(b) for b in fleet[:3]]
    decision = run(fleet, jobs, max_concurrent_jobs=1)
    assert decision.admit == [] and decision.delete == []
    assert decision.running == 3


def test_an_orphan_job_is_deleted_and_holds_its_slot_until_it_is_gone() -> None:
    gone = backfill("gone", yacht=1)
    orphan = job_of(gone)  # its YachtBackfill no longer exists
    waiting = backfill("waiting", yacht=2)
    decision = run([waiting], [orphan])
    assert decision.delete == [orphan]
    assert decision.running == 1
    # Its pod is still running while it is deleted: admitting now would briefly run two.
    assert decision.admit == []
    assert decision.verdicts[waiting.uid].queue_position == 1
    after = run([waiting], [replace(orphan, deleting=True)])
    assert admitted(after) == ["waiting"]


def test_an_orphan_job_keeps_its_yacht_busy_until_it_is_gone() -> None:
    # The same yacht's backfill in another namespace, and room for many Jobs.
    deleted = backfill("lady-marina", "team-a", yacht=1, deleting=True)
    other = backfill("lady-marina", "team-b", yacht=1)
    job = job_of(deleted)
    decision = run([deleted, other], [job], max_concurrent_jobs=5)
    assert decision.delete == [job]
    assert decision.admit == []
    assert "another backfill of this yacht" in decision.verdicts[other.uid].message
    assert admitted(run([deleted, other], [], max_concurrent_jobs=5)) == ["lady-marina"]


def test_a_job_already_being_deleted_is_not_deleted_again_nor_counted() -> None:
    gone = backfill("gone", yacht=1)
    waiting = backfill("waiting", yacht=2)
    decision = run([waiting], [job_of(gone, deleting=True)])
    assert decision.delete == []
    assert admitted(decision) == ["waiting"]


def test_finished_orphan_jobs_are_left_to_garbage_collection() -> None:
    gone = backfill("gone", yacht=1)
    waiting = backfill("waiting", yacht=2)
    decision = run([waiting], [job_of(gone, state=JobState.SUCCEEDED)])
    assert decision.delete == []
    assert admitted(decision) == ["waiting"]


# --- One Job per yacht ------------------------------------------------------------------------


def test_two_backfills_of_one_yacht_are_never_admitted_together() -> None:
    a = backfill("lady-marina", "team-a", yacht=1, spec={"tier": "enterprise"})
    b = backfill("lady-marina", "team-b", yacht=1, spec={"tier": "premium"})
    c = backfill("sea-breeze", "team-b", yacht=2, spec={"tier": "standard"})
    decision = run([a, b, c], max_concurrent_jobs=5)
    assert [(x.namespace, x.name) for x, _ in decision.admit] == [
        ("team-a", "lady-marina"), ("team-b", "sea-breeze")]
    twin = decision.verdicts[b.uid]
    assert (twin.phase, twin.reason, twin.queue_position) == (
        Phase.PENDING, "DuplicateYacht", None)
    assert twin.message == f"yacht {Y1} is handled by YachtBackfill team-a/lady-marina"


def test_a_running_job_makes_its_backfill_the_yachts_whatever_the_priorities() -> None:
    a = backfill("a", "team-a", yacht=1, spec={"tier": "standard"})
    b = backfill("b", "team-b", yacht=1, spec={"tier": "enterprise"})
    decision = run([a, b], [job_of(a)], max_concurrent_jobs=5)
    assert decision.admit == []
    assert decision.verdicts[a.uid].phase is Phase.RUNNING
    twin = decision.verdicts[b.uid]
    assert (twin.phase, twin.reason) == (Phase.PENDING, "DuplicateYacht")
    assert "team-a/a" in twin.message


def test_the_oldest_backfill_of_a_yacht_handles_it_and_its_twin_takes_over_when_it_goes(
) -> None:
    older = backfill("older", yacht=1, age=0)
    newer = backfill("newer", yacht=1, age=5)
    decision = run([newer, older])
    assert decision.admit == [(older, 1)]
    assert decision.verdicts[newer.uid].reason == "DuplicateYacht"
    # Deleted, or suspended: the other one is the yacht's now.
    for gone in (replace(older, deleting=True),
                 replace(older, spec=replace(older.spec, suspend=True))):
        assert run([newer, gone]).admit == [(newer, 1)]


# --- Never a Job for a suspended, deleted or invalid backfill ----------------------------------


def test_a_suspended_backfill_is_not_admitted() -> None:
    b = backfill(spec={"suspend": True})
    decision = run([b])
    assert decision.admit == []
    verdict = decision.verdicts[b.uid]
    assert (verdict.phase, verdict.reason, verdict.queue_position) == (
        Phase.SUSPENDED, "Suspended", None)


def test_suspending_stops_the_running_job() -> None:
    b = backfill(spec={"suspend": True}, status={"phase": "Running", "admissions": 1})
    job = job_of(b, 1, JobState.ACTIVE)
    decision = run([b], [job])
    assert decision.delete == [job]
    assert decision.verdicts[b.uid].phase is Phase.SUSPENDED


def test_a_suspended_backfills_finished_job_is_kept() -> None:
    b = backfill(spec={"suspend": True})
    decision = run([b], [job_of(b, 1, JobState.SUCCEEDED)])
    assert decision.delete == []


def test_a_deleted_backfill_is_not_admitted_and_its_job_is_stopped() -> None:
    b = backfill(deleting=True)
    job = job_of(b)
    decision = run([b], [job])
    assert decision.admit == []
    assert decision.delete == [job]
    assert b.uid not in decision.verdicts
    assert run([b]).admit == []


def test_an_invalid_spec_is_failed_never_admitted_and_its_job_is_stopped() -> None:
    b = replace(backfill(), spec=None, spec_error="spec.batchSize: Invalid value: 0")
    job = ObservedJob("fleet", "yb-x", b.uid, Y1, 1, JobState.ACTIVE)
    decision = decide([b], [job], {Y1: 100}, max_concurrent_jobs=1, job_retries=1)
    assert decision.admit == []
    assert decision.delete == [job]
    verdict = decision.verdicts[b.uid]
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "InvalidSpec")
    assert "spec.batchSize" in verdict.message


# --- Queue positions ----------------------------------------------------------------------------


def test_every_waiting_candidate_is_numbered_from_one_in_order() -> None:
    fleet = [backfill(f"b{i}", yacht=i, age=i) for i in range(1, 8)]
    decision = run(fleet, max_concurrent_jobs=2)
    assert positions(decision, fleet) == {
        "b1": None, "b2": None, "b3": 1, "b4": 2, "b5": 3, "b6": 4, "b7": 5}
    for b in fleet[:2]:
        verdict = decision.verdicts[b.uid]
        assert verdict.phase is Phase.ADMITTED and verdict.admit == 1
    for b in fleet[2:]:
        assert decision.verdicts[b.uid].phase is Phase.QUEUED


def test_backfills_that_are_not_candidates_have_no_queue_position() -> None:
    running = backfill("running", yacht=1)
    suspended = backfill("suspended", yacht=2, spec={"suspend": True})
    idle = backfill("idle", yacht=3)
    done = backfill("done", yacht=4, status={"phase": "Succeeded"})
    waiting = backfill("waiting", yacht=5)
    fleet = [running, suspended, idle, done, waiting]
    decision = run(fleet, [job_of(running)], work={Y1: 5, Y2: 5, Y3: 0, yacht_id(4): 5,
                                                   yacht_id(5): 5})
    assert positions(decision, fleet) == {
        "running": None, "suspended": None, "idle": None, "done": None, "waiting": 1}


# --- No work ------------------------------------------------------------------------------------


@pytest.mark.parametrize("work", [{Y1: 0}, {}], ids=["zero", "unknown"])
def test_a_continuous_backfill_without_work_is_pending_and_not_admitted(
        work: dict[str, int]) -> None:
    b = backfill(spec={"mode": "Continuous"})
    decision = run([b], work=work)
    assert decision.admit == []
    verdict = decision.verdicts[b.uid]
    assert (verdict.phase, verdict.reason, verdict.queue_position) == (
        Phase.PENDING, "NoWork", None)


def test_a_once_backfill_of_a_yacht_without_rows_is_complete_at_once() -> None:
    b = backfill(spec={"mode": "Once"})
    decision = run([b], work={}, rows={})
    verdict = decision.verdicts[b.uid]
    assert decision.admit == []
    assert (verdict.phase, verdict.reason) == (Phase.SUCCEEDED, "NoRows")


def test_a_once_backfill_whose_rows_are_all_embedded_already_is_complete() -> None:
    b = backfill(spec={"mode": "Once"})
    decision = run([b], work={Y1: 0}, rows={Y1: 250})
    verdict = decision.verdicts[b.uid]
    assert decision.admit == []
    assert (verdict.phase, verdict.reason) == (Phase.SUCCEEDED, "QueueDrained")


def test_rows_that_come_after_an_empty_once_backfill_completed_are_not_its_work() -> None:
    b = backfill(spec={"mode": "Once"}, status={"phase": "Succeeded", "observedGeneration": 1})
    decision = run([b], work={Y1: 40}, rows={Y1: 40})
    assert decision.admit == []
    assert decision.verdicts[b.uid].phase is Phase.SUCCEEDED


# --- Admission numbers --------------------------------------------------------------------------


def test_the_first_admission_is_number_one() -> None:
    b = backfill()
    decision = run([b])
    assert decision.admit == [(b, 1)]
    assert decision.verdicts[b.uid].admit == 1


@pytest.mark.parametrize(("recorded", "latest", "expected"), [
    (3, None, 4), (3, 2, 4), (2, 3, 4), (0, 5, 6)])
def test_the_next_admission_follows_the_status_or_a_later_job(
        recorded: int, latest: int | None, expected: int) -> None:
    b = backfill(status={"phase": "Running", "admissions": recorded})
    jobs = [job_of(b, latest, JobState.SUCCEEDED)] if latest else []
    decision = run([b], jobs)
    assert decision.admit == [(b, expected)]


def test_a_job_created_before_the_operator_died_is_found_not_duplicated() -> None:
    # Admission 3 was created; the status write that would record it never happened.
    b = backfill(status={"phase": "Queued", "admissions": 2, "queuePosition": 1})
    job = job_of(b, 3, JobState.PENDING)
    decision = run([b], [job, job_of(b, 2, JobState.SUCCEEDED)])
    assert decision.admit == []
    verdict = decision.verdicts[b.uid]
    assert verdict.phase is Phase.ADMITTED and verdict.job == job
    assert verdict.queue_position is None


def test_a_restart_between_creating_and_recording_a_job_creates_the_same_name() -> None:
    fleet = Fleet(backfill(), work={Y1: 100})
    first = fleet.tick(write_status=False)  # the operator dies before writing the status
    assert len(first.admit) == 1
    again = fleet.tick()
    assert again.admit == []
    assert fleet.created == [job_name("fleet", "lady-marina", "uid-fleet-lady-marina", 1)]
    status = fleet.get("lady-marina").status
    assert (status.phase, status.admissions, status.job_name) == (
        Phase.ADMITTED, 1, fleet.created[0])


# --- A backfill's life --------------------------------------------------------------------------


def test_a_completed_job_with_no_work_left_succeeds() -> None:
    b = backfill(status={"phase": "Running", "admissions": 1,
                         "jobName": job_of(backfill()).name})
    decision = run([b], [job_of(b, 1, JobState.SUCCEEDED)], work={Y1: 0})
    verdict = decision.verdicts[b.uid]
    assert (verdict.phase, verdict.reason) == (Phase.SUCCEEDED, "QueueDrained")
    assert decision.admit == []


@pytest.mark.parametrize("mode", ["Once", "Continuous"])
def test_a_completed_job_with_work_left_is_requeued(mode: str) -> None:
    b = backfill(spec={"mode": mode}, status={"phase": "Running", "admissions": 1,
                                              "jobName": job_of(backfill()).name})
    ahead = backfill("ahead", yacht=2, spec={"tier": "enterprise"})
    decision = run([b, ahead], [job_of(b, 1, JobState.SUCCEEDED)], work={Y1: 40, Y2: 5})
    assert admitted(decision) == ["ahead"]
    verdict = decision.verdicts[b.uid]
    assert (verdict.phase, verdict.queue_position) == (Phase.QUEUED, 1)
    assert admitted(run([b], [job_of(b, 1, JobState.SUCCEEDED)], work={Y1: 40})) == [b.name]


def succeeded_once(job_kept: bool) -> tuple[ObservedBackfill, list[ObservedJob]]:
    """A mode-Once backfill its first Job completed, and that Job unless it expired."""
    b = backfill(spec={"mode": "Once"}, status={"phase": "Succeeded", "admissions": 1,
                                                "observedGeneration": 1})
    return b, [job_of(b, 1, JobState.SUCCEEDED)] if job_kept else []


@pytest.mark.parametrize("job_kept", [True, False], ids=["job-kept", "job-expired"])
def test_a_succeeded_once_backfill_stays_succeeded_when_new_work_arrives(
        job_kept: bool) -> None:
    b, jobs = succeeded_once(job_kept)
    decision = run([b], jobs, work={Y1: 250})
    assert decision.admit == []
    assert decision.verdicts[b.uid].phase is Phase.SUCCEEDED
    assert decision.verdicts[b.uid].queue_position is None


@pytest.mark.parametrize("job_kept", [True, False], ids=["job-kept", "job-expired"])
def test_a_succeeded_once_backfill_asked_to_run_again_is_admitted_for_its_new_work(
        job_kept: bool) -> None:
    # Its dead letters were replayed, or drift.autoRequeue re-queued its stale rows.
    b, jobs = succeeded_once(job_kept)
    decision = run([b], jobs, work={Y1: 3}, rerun={b.uid})
    assert decision.admit == [(b, 2)]
    nothing = run([b], jobs, work={Y1: 0}, rerun={b.uid})
    assert nothing.admit == [] and nothing.verdicts[b.uid].phase is not Phase.QUEUED


@pytest.mark.parametrize("job_kept", [True, False], ids=["job-kept", "job-expired"])
def test_a_succeeded_continuous_backfill_is_queued_again_when_new_work_arrives(
        job_kept: bool) -> None:
    b = backfill(spec={"mode": "Continuous"},
                 status={"phase": "Succeeded", "admissions": 1, "observedGeneration": 1})
    jobs = [job_of(b, 1, JobState.SUCCEEDED)] if job_kept else []
    idle = run([b], jobs, work={Y1: 0})
    assert idle.admit == [] and idle.verdicts[b.uid].phase is Phase.SUCCEEDED
    decision = run([b], jobs, work={Y1: 250})
    assert decision.admit == [(b, 2)]


def test_a_failed_job_is_counted_once_and_retried() -> None:
    b = backfill(status={"phase": "Running", "admissions": 1, "failedJobs": 0,
                         "jobName": job_of(backfill()).name})
    failed = job_of(b, 1, JobState.FAILED, reason="BackoffLimitExceeded")
    decision = run([b], [failed], job_retries=2)
    assert decision.admit == [(b, 2)]
    assert decision.verdicts[b.uid].failed_jobs == 1


def test_a_failed_job_is_counted_even_when_no_row_is_left_to_retry_for() -> None:
    b = backfill(status={"phase": "Running", "admissions": 1, "failedJobs": 0,
                         "jobName": job_of(backfill()).name})
    failed = job_of(b, 1, JobState.FAILED, reason="BackoffLimitExceeded")
    decision = run([b], [failed], work={Y1: 0}, job_retries=2)
    verdict = decision.verdicts[b.uid]
    assert decision.admit == []
    # Nothing is left to do (mode Once): done, and the failure still counted.
    assert (verdict.phase, verdict.failed_jobs) == (Phase.SUCCEEDED, 1)


def test_a_failed_job_waiting_for_a_slot_is_not_counted_again() -> None:
    b = backfill(yacht=1, spec={"tier": "standard"},
                 status={"phase": "Running", "admissions": 1, "failedJobs": 0,
                         "jobName": job_of(backfill()).name})
    other = backfill("other", yacht=2)
    fleet = Fleet(b, other, work={Y1: 100, Y2: 100}, job_retries=3)
    fleet.jobs = {j.name: j for j in [
        job_of(b, 1, JobState.FAILED, reason="BackoffLimitExceeded"),
        job_of(other, 1, JobState.ACTIVE)]}
    for _ in range(5):
        fleet.tick()
        status = fleet.get("lady-marina").status
        assert (status.phase, status.failed_jobs) == (Phase.QUEUED, 1)


def test_a_failed_job_is_not_counted_when_the_status_names_another_job() -> None:
    # Job 2 failed before the status recorded it: the failure is not the status' Job.
    b = backfill(status={"phase": "Running", "admissions": 1, "failedJobs": 0,
                         "jobName": job_of(backfill(), 1).name})
    decision = run([b], [job_of(b, 1, JobState.SUCCEEDED),
                         job_of(b, 2, JobState.FAILED, reason="BackoffLimitExceeded")],
                   job_retries=0)
    verdict = decision.verdicts[b.uid]
    assert verdict.failed_jobs == 0
    assert decision.admit == [(b, 3)]


@pytest.mark.parametrize("reason", ["BackoffLimitExceeded", "DeadlineExceeded"])
def test_the_backfill_fails_with_the_jobs_reason_after_the_retries(reason: str) -> None:
    fleet = Fleet(backfill(), work={Y1: 100}, job_retries=1)
    fleet.tick()
    fleet.finish("lady-marina", JobState.ACTIVE)
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.RUNNING

    fleet.finish("lady-marina", JobState.FAILED, reason, "Job has reached the limit")
    retry = fleet.tick()
    assert [n for _, n in retry.admit] == [2]
    assert fleet.get("lady-marina").status.failed_jobs == 1

    fleet.finish("lady-marina", JobState.FAILED, reason, "Job has reached the limit")
    final = fleet.tick()
    assert final.admit == []
    verdict = final.verdicts[fleet.get("lady-marina").uid]
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, reason)
    status = fleet.get("lady-marina").status
    assert (status.phase, status.failed_jobs) == (Phase.FAILED, 2)
    assert status.condition("Failed").reason == reason
    assert [(n.type, n.reason) for _, n in fleet.events if n.reason == reason] == [
        ("Warning", reason)]

    for _ in range(3):  # counted once: nothing moves any more
        assert fleet.tick().admit == []
        assert fleet.patches == 0
    assert len(fleet.created) == 2


def test_a_failed_backfill_stays_failed_after_its_job_expires() -> None:
    fleet = Fleet(backfill(), work={Y1: 100}, job_retries=0)
    fleet.tick()
    fleet.finish("lady-marina", JobState.FAILED, "BackoffLimitExceeded", "3 pods failed")
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.FAILED
    failed = fleet.get("lady-marina").status.condition("Failed")
    fleet.jobs.clear()  # ttlSecondsAfterFinished removed the Job
    decision = fleet.tick()
    assert decision.admit == []
    assert fleet.phase("lady-marina") is Phase.FAILED
    assert fleet.get("lady-marina").status.condition("Failed") == failed
    assert fleet.patches == 0


@pytest.mark.parametrize("job_kept", [True, False], ids=["job-kept", "job-expired"])
def test_a_failed_backfill_whose_spec_changed_starts_afresh(job_kept: bool) -> None:
    b = backfill(generation=3, status={
        "phase": "Failed", "admissions": 2, "failedJobs": 2, "observedGeneration": 2,
        "jobName": job_of(backfill(), 2).name})
    jobs = [job_of(b, 2, JobState.FAILED, reason="BackoffLimitExceeded")] if job_kept else []
    decision = run([b], jobs)
    assert decision.admit == [(b, 3)]
    verdict = decision.verdicts[b.uid]
    assert verdict.failed_jobs == 0 and verdict.reset
    unchanged = replace(b, generation=2)
    assert run([unchanged], jobs).admit == []


def test_a_succeeded_continuous_backfill_runs_again_as_work_arrives() -> None:
    fleet = Fleet(backfill(spec={"mode": "Continuous"}), work={Y1: 100})
    fleet.tick()
    fleet.finish("lady-marina", JobState.SUCCEEDED)
    fleet.work[Y1] = 0
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.SUCCEEDED
    assert fleet.tick().admit == []
    fleet.work[Y1] = 12
    assert [n for _, n in fleet.tick().admit] == [2]
    assert fleet.phase("lady-marina") is Phase.ADMITTED


def test_a_resumed_backfill_gets_a_new_job() -> None:
    fleet = Fleet(backfill(), work={Y1: 100})
    fleet.tick()
    fleet.update("lady-marina", spec=replace(fleet.get("lady-marina").spec, suspend=True),
                 generation=2)
    decision = fleet.tick()
    assert len(decision.delete) == 1 and fleet.jobs == {}
    assert fleet.phase("lady-marina") is Phase.SUSPENDED
    fleet.update("lady-marina", spec=replace(fleet.get("lady-marina").spec, suspend=False),
                 generation=3)
    assert [n for _, n in fleet.tick().admit] == [2]


# --- A Job's end, seen once (the operator bumps the yacht's cache generation) -----------------


def test_a_jobs_end_is_seen_once_however_many_ticks_follow() -> None:
    fleet = Fleet(backfill(), work={Y1: 100})
    fleet.tick()
    fleet.finish("lady-marina", JobState.ACTIVE)
    fleet.tick()
    assert fleet.ended == []
    fleet.finish("lady-marina", JobState.SUCCEEDED)
    fleet.work[Y1] = 0
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.SUCCEEDED
    for _ in range(3):
        fleet.tick()
    assert fleet.ended == ["lady-marina"]


def test_an_end_whose_status_write_was_lost_is_seen_again() -> None:
    fleet = Fleet(backfill(), work={Y1: 100})
    fleet.tick()
    fleet.finish("lady-marina", JobState.SUCCEEDED)
    fleet.work[Y1] = 0
    fleet.tick(write_status=False)  # the operator dies before recording the end
    fleet.tick()
    fleet.tick()
    assert fleet.ended == ["lady-marina", "lady-marina"]  # at least once, never lost


def test_each_job_of_a_retried_backfill_ends_once() -> None:
    fleet = Fleet(backfill(), work={Y1: 100}, job_retries=1)
    fleet.tick()
    fleet.finish("lady-marina", JobState.FAILED, "BackoffLimitExceeded", "3 pods failed")
    assert [n for _, n in fleet.tick().admit] == [2]  # retried in the same decision
    assert fleet.ended == ["lady-marina"]
    fleet.finish("lady-marina", JobState.FAILED, "BackoffLimitExceeded", "3 pods failed")
    fleet.tick()
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.FAILED
    assert fleet.ended == ["lady-marina", "lady-marina"]


def test_a_job_that_ends_with_work_left_ends_once_and_its_successor_too() -> None:
    fleet = Fleet(backfill(spec={"mode": "Continuous"}), work={Y1: 100})
    fleet.tick()
    fleet.finish("lady-marina", JobState.SUCCEEDED)
    fleet.work[Y1] = 12  # rows queued while it ran: admitted again at once
    assert [n for _, n in fleet.tick().admit] == [2]
    fleet.tick()
    assert fleet.ended == ["lady-marina"]
    fleet.finish("lady-marina", JobState.SUCCEEDED)
    fleet.work[Y1] = 0
    fleet.tick()
    fleet.tick()
    assert fleet.ended == ["lady-marina", "lady-marina"]


def test_a_job_stopped_by_suspend_is_not_an_end() -> None:
    fleet = Fleet(backfill(), work={Y1: 100})
    fleet.tick()
    fleet.update("lady-marina", spec=replace(fleet.get("lady-marina").spec, suspend=True),
                 generation=2)
    fleet.tick()
    fleet.tick()
    assert fleet.phase("lady-marina") is Phase.SUSPENDED
    assert fleet.ended == []


# --- Determinism, idempotence, scale ------------------------------------------------------------


def test_the_decision_does_not_depend_on_input_order() -> None:
    fleet = [backfill(f"b{i}", f"ns{i % 3}", yacht=i % 5, age=i % 4,
                      spec={"priority": (i * 37) % 7}) for i in range(30)]
    jobs = [job_of(fleet[3]), job_of(fleet[8], state=JobState.SUCCEEDED)]
    work = {yacht_id(i): 10 * i for i in range(5)}
    expected = decide(fleet, jobs, work, max_concurrent_jobs=3, job_retries=1)
    rng = random.Random(7)
    for _ in range(5):
        shuffled, shuffled_jobs = fleet[:], jobs[:]
        rng.shuffle(shuffled)
        rng.shuffle(shuffled_jobs)
        decision = decide(shuffled, shuffled_jobs, work, max_concurrent_jobs=3, job_retries=1)
        assert decision.admit == expected.admit
        assert decision.verdicts == expected.verdicts


def test_feeding_the_status_back_admits_nothing_new_while_the_job_exists() -> None:
    fleet = Fleet(backfill("a", yacht=1), backfill("b", yacht=2), work={Y1: 100, Y2: 100})
    assert len(fleet.tick().admit) == 1
    for _ in range(4):
        decision = fleet.tick()
        assert decision.admit == []
    assert len(fleet.created) == 1
    assert fleet.patches == 0  # the status converged: nothing to write
    fleet.finish("a", JobState.ACTIVE)
    fleet.tick()
    assert fleet.tick().admit == [] and fleet.patches == 0


def test_a_fleet_runs_to_completion_within_the_invariants() -> None:
    backfills = [
        backfill("e1", "team-a", yacht=1, spec={"tier": "enterprise"}),
        backfill("e1", "team-b", yacht=1, spec={"tier": "premium"}),  # same yacht
        backfill("p2", "team-a", yacht=2, spec={"tier": "premium"}),
        backfill("s3", "team-a", yacht=3),
        backfill("s4", "team-b", yacht=4, spec={"suspend": True}),
    ]
    fleet = Fleet(*backfills, work={yacht_id(i): 10 for i in range(1, 5)},
                  max_concurrent_jobs=2)
    for _ in range(30):
        fleet.tick()  # checks the invariants after each decision
        for job in [j for j in fleet.jobs.values() if not j.finished]:
            fleet.jobs[job.name] = replace(job, state=JobState.SUCCEEDED)
            fleet.work[job.yacht_id] = 0
    phases = {(b.namespace, b.name): b.status.phase for b in fleet.backfills.values()}
    assert phases == {
        ("team-a", "e1"): Phase.SUCCEEDED,
        ("team-b", "e1"): Phase.PENDING,  # its yacht's rows were embedded by team-a's
        ("team-a", "p2"): Phase.SUCCEEDED, ("team-a", "s3"): Phase.SUCCEEDED,
        ("team-b", "s4"): Phase.SUSPENDED}
    assert len(fleet.created) == 3


def _random_fleet(rng: random.Random) -> tuple[list[ObservedBackfill], list[ObservedJob],
                                               dict[str, int]]:
    backfills = []
    for i in range(rng.randint(1, 12)):
        b = backfill(f"b{i}", f"ns{rng.randint(0, 2)}", yacht=rng.randint(1, 4),
                     age=rng.randint(0, 3), deleting=rng.random() < 0.1,
                     spec={"suspend": rng.random() < 0.2, "priority": rng.randint(0, 3)},
                     status={"admissions": rng.randint(0, 2)})
        if rng.random() < 0.05:
            b = replace(b, spec=None, spec_error="spec.tier: Unsupported value")
        backfills.append(b)
    jobs = []
    for b in backfills:
        if rng.random() < 0.4:
            yacht = b.spec.yacht_id if b.spec else Y1
            jobs.append(ObservedJob(b.namespace, f"yb-{b.name}", b.uid, yacht,
                                    rng.randint(1, 3), rng.choice(list(JobState)),
                                    deleting=rng.random() < 0.1))
    for n in range(rng.randint(0, 2)):  # orphans
        jobs.append(ObservedJob("ns0", f"yb-orphan-{n}", f"gone-{n}", yacht_id(rng.randint(1, 4)),
                                1, rng.choice(list(JobState))))
    work = {yacht_id(y): rng.choice([0, 1, 50]) for y in range(1, 5) if rng.random() < 0.9}
    return backfills, jobs, work


def test_the_invariants_hold_whatever_the_observed_state() -> None:
    rng = random.Random(20250131)
    for _ in range(500):
        backfills, jobs, work = _random_fleet(rng)
        limit = rng.randint(1, 3)
        decision = decide(backfills, jobs, work, max_concurrent_jobs=limit, job_retries=1)
        by_uid = {b.uid: b for b in backfills}
        unfinished = [j for j in jobs if not j.finished and not j.deleting]
        # Never more than the limit, counting every Job that still runs.
        assert len(decision.admit) <= max(0, limit - len(unfinished))
        # Never two Jobs for one yacht.
        new_yachts = [b.spec.yacht_id for b, _ in decision.admit]
        assert len(new_yachts) == len(set(new_yachts))
        assert not set(new_yachts) & {j.yacht_id for j in unfinished}
        # Never a Job for a suspended, deleted or broken backfill, nor one without work.
        for b, _ in decision.admit:
            assert b.spec is not None and not b.spec.suspend and not b.deleting
            assert work.get(b.spec.yacht_id, 0) > 0
        # Their running Jobs are stopped; nothing else is.
        for job in unfinished:
            owner = by_uid.get(job.backfill_uid)
            doomed = owner is None or owner.deleting or owner.spec is None \
                or owner.spec.suspend
            assert (job in decision.delete) == doomed
        assert all(not j.finished and not j.deleting for j in decision.delete)
        # Queue positions 1..n for the waiting, none for anyone else.
        waiting = sorted(v.queue_position for v in decision.verdicts.values()
                         if v.queue_position is not None)
        assert waiting == list(range(1, len(waiting) + 1))
        for verdict in decision.verdicts.values():
            assert (verdict.queue_position is not None) == (verdict.phase is Phase.QUEUED)
        assert all(v.admit is None or v.phase is Phase.ADMITTED
                   for v in decision.verdicts.values())


def test_ten_thousand_backfills_are_decided_quickly_and_in_order() -> None:
    rng = random.Random(1)
    tiers = ["enterprise", "premium", "standard"]
    fleet = [backfill(f"yacht-{i:05d}", f"fleet-{i % 20}", yacht=i, age=rng.randint(0, 500),
                      spec={"tier": rng.choice(tiers)}) for i in range(10_000)]
    work = {b.spec.yacht_id: rng.randint(0, 5000) for b in fleet}
    jobs = [job_of(b) for b in fleet[:2]]
    started = time.perf_counter()
    decision = decide(fleet, jobs, work, max_concurrent_jobs=5, job_retries=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0

    candidates = sorted(
        (b for b in fleet[2:] if work[b.spec.yacht_id] > 0),
        key=lambda b: (-b.spec.effective_priority, work[b.spec.yacht_id], b.created,
                       b.namespace, b.name))
    assert [b for b, _ in decision.admit] == candidates[:3]
    queued = sorted((v.queue_position, uid) for uid, v in decision.verdicts.items()
                    if v.queue_position is not None)
    assert [uid for _, uid in queued] == [b.uid for b in candidates[3:]]
    assert [p for p, _ in queued] == list(range(1, len(candidates) - 2))



def test_a_backfill_failed_only_for_its_spec_is_admitted_once_the_spec_reads() -> None:
    # E.g. an operator upgrade accepts what the old one refused; no Job of it ever failed.
    b = backfill(status={"phase": "Failed", "failedJobs": 0, "observedGeneration": 1})
    assert run([b]).admit == [(b, 1)]
