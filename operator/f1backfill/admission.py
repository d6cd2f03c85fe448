"""The fleet-wide admission decision: pure, from observed state only.

(backfills, their Jobs, each yacht's outstanding rows) -> what each backfill is now, which
Jobs to create and which to delete. Nothing here remembers anything between calls: an
operator restarted at any moment takes the same decision from the same cluster and
database, and the deterministic Job names make a repeated creation a no-op.

Invariants, whatever users do: never more than `max_concurrent_jobs` unfinished Jobs,
never two for one yacht, never one for a suspended or deleted backfill.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from .api import BackfillSpec, BackfillStatus, Mode, Phase
from .constants import ConditionType

# The reason of a yacht's second backfill, which waits on the one that handles the yacht.
DUPLICATE_YACHT = "DuplicateYacht"


class JobState(StrEnum):
    PENDING = "Pending"  # created, no pod running yet
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class ObservedJob:
    namespace: str
    name: str
    backfill_uid: str  # the owner's uid: names can be reused, uids cannot
    yacht_id: str
    admission: int
    state: JobState
    reason: str = ""
    message: str = ""
    deleting: bool = False
    resource_version: str = ""  # what was observed, exactly (empty: not from the API)

    @property
    def finished(self) -> bool:
        return self.state in (JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class ObservedBackfill:
    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: BackfillSpec | None  # None when the spec is invalid
    status: BackfillStatus = field(default_factory=BackfillStatus)
    spec_error: str = ""
    deleting: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""  # changes with every write: what was observed, exactly

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one backfill is after this decision."""

    phase: Phase
    reason: str
    message: str
    queue_position: int | None = None
    job: ObservedJob | None = None  # its latest Job, if any
    admit: int | None = None  # create the Job of this admission number
    failed_jobs: int = 0
    reset: bool = False  # the spec changed since it ended: start afresh


@dataclass
class Decision:
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by backfill uid
    admit: list[tuple[ObservedBackfill, int]] = field(default_factory=list)
    delete: list[ObservedJob] = field(default_factory=list)
    running: int = 0


def order_key(backfill: ObservedBackfill, work: int) -> tuple:
    """The admission order: priority DESC, then fewer pending rows, then age, then name."""
    assert backfill.spec is not None
    return (-backfill.spec.effective_priority, work, backfill.created, backfill.namespace,
            backfill.name)


def decide(
    backfills: Iterable[ObservedBackfill],
    jobs: Iterable[ObservedJob],
    work: Mapping[str, int],
    *,
    max_concurrent_jobs: int,
    job_retries: int,
    rerun: Collection[str] = (),
    rows: Mapping[str, int] | None = None,
) -> Decision:
    """`work` maps a yacht id to its rows that still need an embedding (missing = unknown,
    taken as none: a yacht the database has not reported on is not admitted), `rows` to all
    its rows (missing: none; None: not known, no backfill is told its yacht is empty).
    `rerun` names the backfills (by uid) asked to run again although they Succeeded: their
    dead letters were replayed or their stale rows re-queued, which a person asked for."""
    decision = Decision()
    live = {b.uid: b for b in backfills if not b.deleting}
    latest, busy_yachts = _index_jobs(jobs, live, decision)
    owners = _owners(live.values(), latest)
    candidates: list[ObservedBackfill] = []
    for backfill in live.values():
        job = latest.get(backfill.uid)
        owner = owners.get(backfill.spec.yacht_id) if backfill.spec else None
        if owner is not None and owner is not backfill and (job is None or job.finished):
            verdict = _duplicate(backfill, owner, job)
        else:
            empty = rows is not None and backfill.spec is not None and \
                not rows.get(backfill.spec.yacht_id)
            verdict = _verdict(backfill, job, work, job_retries,
                               rerun=backfill.uid in rerun, empty=empty)
        decision.verdicts[backfill.uid] = verdict
        if verdict.phase is Phase.QUEUED:
            candidates.append(backfill)
    candidates.sort(key=lambda b: order_key(b, work.get(b.spec.yacht_id, 0)))
    _admit_in_order(candidates, decision, busy_yachts, max_concurrent_jobs)
    return decision


def _index_jobs(jobs: Iterable[ObservedJob], live: Mapping[str, ObservedBackfill],
                decision: Decision) -> tuple[dict[str, ObservedJob], set[str]]:
    """Each live backfill's latest Job and the yachts with an unfinished one; counts the
    unfinished Jobs and marks the ones to stop."""
    latest: dict[str, ObservedJob] = {}
    busy_yachts: set[str] = set()
    for job in jobs:
        if job.deleting:
            continue
        owner = live.get(job.backfill_uid)
        if not job.finished:
            # A Job being stopped still runs until it is gone: its slot and its yacht stay
            # taken in this decision, so no replacement starts next to it.
            decision.running += 1
            busy_yachts.add(job.yacht_id)
            if owner is None or owner.spec is None or owner.spec.suspend:
                # Suspended, deleted or broken: stop it. (Deleted owners' Jobs also go by
                # garbage collection; asking twice is harmless.)
                decision.delete.append(job)
                continue
        if owner is not None:
            current = latest.get(owner.uid)
            if current is None or job.admission > current.admission:
                latest[owner.uid] = job
    return latest, busy_yachts


def _owners(live: Iterable[ObservedBackfill], latest: Mapping[str, ObservedJob]
            ) -> dict[str, ObservedBackfill]:
    """The one backfill in charge of each yacht, among those that could run (valid spec,
    not suspended): the one with an unfinished Job, else the oldest (then by namespace and
    name). The yacht's other backfills wait on it rather than race it."""
    owners: dict[str, ObservedBackfill] = {}
    for backfill in live:
        if backfill.spec is None or backfill.spec.suspend:
            continue
        yacht = backfill.spec.yacht_id
        current = owners.get(yacht)
        if current is None or _owner_key(backfill, latest) < _owner_key(current, latest):
            owners[yacht] = backfill
    return owners


def _owner_key(backfill: ObservedBackfill, latest: Mapping[str, ObservedJob]) -> tuple:
    job = latest.get(backfill.uid)
    return (job is None or job.finished, backfill.created, backfill.namespace, backfill.name)


def _duplicate(backfill: ObservedBackfill, owner: ObservedBackfill,
               job: ObservedJob | None) -> Verdict:
    """A second backfill of a yacht another one handles: it waits on that one, and says so."""
    return Verdict(Phase.PENDING, DUPLICATE_YACHT,
                   f"yacht {owner.spec.yacht_id} is handled by YachtBackfill "
                   f"{owner.namespace}/{owner.name}", job=job,
                   failed_jobs=backfill.status.failed_jobs or 0)


def _admit_in_order(candidates: list[ObservedBackfill], decision: Decision,
                    busy_yachts: set[str], max_concurrent_jobs: int) -> None:
    """Free slots go to the candidates in order, one per yacht; the rest get positions."""
    slots = max(0, max_concurrent_jobs - decision.running)
    position = 0
    for backfill in candidates:
        verdict = decision.verdicts[backfill.uid]
        yacht = backfill.spec.yacht_id
        if slots > 0 and yacht not in busy_yachts:
            admission = _admissions(backfill, verdict.job) + 1
            decision.admit.append((backfill, admission))
            decision.verdicts[backfill.uid] = replace(
                verdict, phase=Phase.ADMITTED, reason="Admitted",
                message=f"admitted (Job {admission} of this backfill)", admit=admission)
            busy_yachts.add(yacht)
            slots -= 1
            decision.running += 1
            continue
        position += 1
        waiting = ("another backfill of this yacht is running" if yacht in busy_yachts
                   else f"waiting for a free slot ({max_concurrent_jobs} at a time)")
        retrying = verdict.reason == "Retrying"
        if retrying:  # keep why it waits again: its last Job failed
            waiting = f"{verdict.message}; {waiting}"
        decision.verdicts[backfill.uid] = replace(
            verdict, queue_position=position, reason="Retrying" if retrying else "Waiting",
            message=waiting)


def _admissions(backfill: ObservedBackfill, job: ObservedJob | None) -> int:
    """Admissions so far: the status says, unless a Job shows a later one (the operator
    died after creating it and before writing the status)."""
    recorded = backfill.status.admissions or 0
    return max(recorded, job.admission if job else 0)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What `_verdict` reads of one backfill, worked out once."""

    spec: BackfillSpec
    phase: Phase | None  # the stored phase (a rerun asked for reads as not Succeeded)
    job: ObservedJob | None  # its latest Job
    outstanding: int  # rows of its yacht still to embed
    failed_jobs: int
    reset: bool  # the spec changed since it ended: start afresh
    reacting: bool  # its status still shows this Job admitted or running: news to count
    empty: bool  # the yacht has no rows at all


def _verdict(backfill: ObservedBackfill, job: ObservedJob | None, work: Mapping[str, int],
             job_retries: int, *, rerun: bool = False, empty: bool = False) -> Verdict:
    status = backfill.status
    failed_jobs = status.failed_jobs or 0
    if backfill.spec is None:
        return Verdict(Phase.FAILED, "InvalidSpec", backfill.spec_error, job=job,
                       failed_jobs=failed_jobs)
    if backfill.spec.suspend:
        return Verdict(Phase.SUSPENDED, "Suspended", "spec.suspend is true", job=job,
                       failed_jobs=failed_jobs)
    phase = Phase.PENDING if rerun and status.phase is Phase.SUCCEEDED else status.phase
    # A spec changed after the backfill ended (fixed, re-prioritised, resumed) starts afresh.
    changed = status.observed_generation is not None and \
        status.observed_generation != backfill.generation
    reset = changed and phase in (Phase.FAILED, Phase.SUCCEEDED)
    reacting = (job is not None and job.name == status.job_name
                and phase in (Phase.ADMITTED, Phase.RUNNING))
    if reset:
        failed_jobs = 0
    elif reacting and job.state is JobState.FAILED:
        failed_jobs += 1  # counted once: the status written now leaves Running
    seen = _Seen(spec=backfill.spec, phase=phase, job=job,
                 outstanding=work.get(backfill.spec.yacht_id, 0), failed_jobs=failed_jobs,
                 reset=reset, reacting=reacting, empty=empty)
    if job is not None and not job.finished:
        state = Phase.RUNNING if job.state is JobState.ACTIVE else Phase.ADMITTED
        return Verdict(state, "JobRunning" if state is Phase.RUNNING else "JobCreated",
                       f"Job {job.name} is {job.state.value.lower()}", job=job,
                       failed_jobs=seen.failed_jobs)
    if job is not None and not reset:
        ended = (_after_failed_job(seen, job, job_retries) if job.state is JobState.FAILED
                 else _after_succeeded_job(seen, job))
        if ended is not None:
            return ended
    return _without_job(seen, backfill.status)


def _after_failed_job(seen: _Seen, job: ObservedJob, job_retries: int) -> Verdict | None:
    """Its latest Job failed (and is counted in `seen.failed_jobs`): retried, or the
    backfill fails; None when there is nothing left to retry for."""
    failed_jobs = seen.failed_jobs
    if failed_jobs > job_retries or (seen.phase is Phase.FAILED and not seen.reacting):
        return Verdict(Phase.FAILED, job.reason or "JobFailed",
                       f"Job {job.name} failed: {job.message or job.reason or 'unknown'}",
                       job=job, failed_jobs=failed_jobs)
    if seen.outstanding:
        return Verdict(Phase.QUEUED, "Retrying",
                       f"Job {job.name} failed; retry {failed_jobs} of {job_retries}",
                       job=job, failed_jobs=failed_jobs)
    return None


def _after_succeeded_job(seen: _Seen, job: ObservedJob) -> Verdict:
    """Its latest Job succeeded: done, unless rows came since and the mode takes them."""
    if seen.outstanding == 0:
        return Verdict(Phase.SUCCEEDED, "QueueDrained",
                       "every row of the yacht is embedded or dead-lettered", job=job)
    done_before = seen.phase is Phase.SUCCEEDED and not seen.reacting
    if done_before and seen.spec.mode is Mode.ONCE:
        return Verdict(Phase.SUCCEEDED, "QueueDrained",
                       f"completed; {seen.outstanding} rows queued since (mode Once)", job=job)
    return Verdict(Phase.QUEUED, "NewWork", f"{seen.outstanding} rows to embed", job=job)


def _without_job(seen: _Seen, status: BackfillStatus) -> Verdict:
    """No Job to go by (never admitted, or its Job is gone after ttlSecondsAfterFinished):
    the stored phase says where it ended, the database whether there is work."""
    job, reset = seen.job, seen.reset
    if seen.phase is Phase.SUCCEEDED and not reset and seen.spec.mode is Mode.ONCE:
        return Verdict(Phase.SUCCEEDED, "QueueDrained", "completed", job=job)
    if seen.phase is Phase.FAILED and not reset and seen.failed_jobs > 0:
        # Its failed Job is gone: the backfill stays failed, as it said, until its spec
        # changes.
        failed = status.condition(ConditionType.FAILED)
        return Verdict(Phase.FAILED, failed.reason if failed else "JobFailed",
                       failed.message if failed else "its Jobs failed", job=job,
                       failed_jobs=seen.failed_jobs)
    if seen.outstanding:
        return Verdict(Phase.QUEUED, "Waiting", f"{seen.outstanding} rows to embed", job=job,
                       failed_jobs=seen.failed_jobs, reset=reset)
    if seen.phase is Phase.SUCCEEDED and not reset:
        return Verdict(Phase.SUCCEEDED, "QueueDrained", "completed; no new work", job=job)
    if seen.spec.mode is Mode.ONCE:
        # Nothing to do is done: `kubectl wait --for=condition=Complete` must not hang on
        # an empty yacht. Rows that come later are work for Continuous mode or for
        # drift.autoRequeue.
        if seen.empty:
            return Verdict(Phase.SUCCEEDED, "NoRows",
                           "the yacht has no rows in search_index: nothing to embed", job=job,
                           failed_jobs=seen.failed_jobs, reset=reset)
        return Verdict(Phase.SUCCEEDED, "QueueDrained",
                       "every row of the yacht is embedded or dead-lettered", job=job,
                       failed_jobs=seen.failed_jobs, reset=reset)
    return Verdict(Phase.PENDING, "NoWork", "no rows of the yacht need an embedding",
                   job=job, failed_jobs=seen.failed_jobs, reset=reset)
