"""The fleet reconciler: one decision for the whole fleet per tick, level-based.

Two informers (YachtBackfills, and the Jobs of ours) feed the `FleetCache` and wake the
loop; a timer makes sure progress is re-read every `tick_seconds` even when nothing in the
cluster moves. Each tick acts on what users asked through annotations and drift settings,
reads the database once (grouped by yacht), decides with the pure `admission.decide`,
then acts: deletes Jobs that must stop, creates Jobs that were admitted (deterministic
names: a repeat is a 409, adopted), and writes each backfill's status, built by
`build_status` only, when it changed, with an Event per transition.

A failed tick is one log line. A transient failure (the database or the API server away
for a while) is retried with a growing backoff; a permanent one (a database never
migrated, a request the API server refuses) is also reported on every backfill as the
condition `Stalled`, so `kubectl describe` says what blocks it.

Only the replica that kopf's peering lets run acts (see `peering.py`): two replicas never
both admit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..admission import Decision, ObservedBackfill, Verdict, decide
from ..api import BackfillStatus, DriftStatus, Phase, job_name
from ..builders.job import build_job
from ..builders.status import (
    DRIFT_STAMP_REFRESH,
    NO_ACTIONS,
    Actions,
    EventNote,
    Thresholds,
    build_status,
    job_completed,
    stalled_status,
    status_patch,
)
from ..config import OperatorSettings
from ..constants import ANNOTATION_ABANDON_DEAD_LETTERS, ANNOTATION_REPLAY_DEAD_LETTERS
from ..db.figures import DriftProbe, YachtFigures
from ..db.fleet import FleetDatabase
from ..edgekv import EdgeGenerations
from ..errors import BackfillError, PermanentError, TransientError
from ..generations import Generations
from ..memory import release_memory
from .fleetcache import FleetCache
from .informer import Informer, watched_backfills, watched_jobs
from .kube import Kube
from .metrics import BackfillSample, OperatorMetrics
from .observe import observe_job
from .peering import PeeringGate
from .rates import RateTracker

log = logging.getLogger(__name__)

STATUS_WRITERS = 8
# A tick that wrote this many statuses (the first one of a large fleet) leaves megabytes of
# freed response bodies behind; hand them back to the system rather than keep the peak.
RELEASE_AFTER_WRITES = 500
# After a watch event the tick waits this long for the rest of a burst (a kubectl apply of
# many backfills), to decide once for all of them; not after a Job's end (see _loop).
BURST_SECONDS = 0.1
# After a failed tick the next comes later and later: tick_seconds, doubled per failure,
# capped here. Nothing is retried in a tight loop while a database or API server is away.
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Desired:
    backfill: ObservedBackfill
    verdict: Verdict
    status: BackfillStatus
    events: list[EventNote]
    # The status differs from the stored one. Its merge patch is encoded when it is written,
    # not here: the first tick of a large fleet would otherwise hold every patch at once.
    changed: bool
    inputs: tuple  # what the status was built from (see Reconciler._desired)


@dataclass(frozen=True)
class Write:
    """A status to patch into the cluster, and the Events to post once it is written."""

    backfill: ObservedBackfill
    status: BackfillStatus
    events: list[EventNote]
    inputs: tuple | None = None  # a Desired's inputs, remembered if nothing needs writing


def drift_inputs(old: DriftStatus | None, new: DriftStatus | None, now: datetime) -> tuple:
    """What of a drift check can change a status: the count, and whether the check time is
    due to be written again (see builders.status.DRIFT_STAMP_REFRESH)."""
    if new is None:
        return (None, False)
    stamp = old.last_checked_at if old is not None else None
    return (new.stale_rows, stamp is None or now - stamp >= DRIFT_STAMP_REFRESH)


def skipped_types(backfills: list[ObservedBackfill]) -> dict[str, frozenset[str]]:
    """Each yacht's object types left alone: those every backfill of the yacht skips."""
    skipped: dict[str, frozenset[str]] = {}
    for backfill in backfills:
        if backfill.spec is None:
            continue
        types = frozenset(backfill.spec.skip_object_types)
        yacht = backfill.spec.yacht_id
        skipped[yacht] = skipped[yacht] & types if yacht in skipped else types
    return skipped


def backoff_seconds(tick_seconds: float, failures: int) -> float:
    return min(MAX_BACKOFF_SECONDS, tick_seconds * 2 ** max(0, failures - 1))


class Reconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube, db: FleetDatabase,
                 metrics: OperatorMetrics, gate: PeeringGate,
                 informers: Iterable[Informer] = (),
                 generations: Generations | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.db = db
        self.metrics = metrics
        self.gate = gate
        # A Job that ends bumps its yacht's search cache generation and publishes it to the
        # edge's KV (each a no-op unless configured).
        self.generations = generations or Generations(
            settings.redis_url, failures=metrics.generation_bump_failures,
            edge=EdgeGenerations.from_settings(settings, metrics.edge_publish_failures))
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()  # a Job ended or went away: a slot is free
        self.cache = FleetCache(on_change=self._wake.set, on_freed=self._freed.set)
        self.informers = list(informers)
        self.rates = RateTracker()
        self.drift: dict[str, DriftStatus] = {}  # by yacht id
        self._drift_due = 0.0
        # Per backfill: the inputs of a status that needed no write, to skip rebuilding it.
        self._last_inputs: dict[str, tuple] = {}
        self.active = False
        self.last_tick: float | None = None
        self.ticks = 0
        self.failures = 0  # ticks failed in a row

    def watch(self, kube: Kube, namespaces: tuple[str, ...]) -> None:
        """Feed the cache from two informers (started by `run`): YachtBackfills, and the
        Jobs of ours."""
        self.informers = [Informer(watched_backfills(kube), self.cache.backfills, namespaces),
                          Informer(watched_jobs(kube), self.cache.jobs, namespaces)]

    @property
    def synced(self) -> bool:
        """Every informer has listed its kind once: the cache holds the whole fleet."""
        return all(informer.synced for informer in self.informers)

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, stopped: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for informer in self.informers:
            informer.start(loop)
        try:
            await self._loop(stopped)
        finally:
            for informer in self.informers:
                informer.stop()

    async def _loop(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            # Cleared before the tick, not after: a Job that ends while a tick runs (its
            # status writes take a while in a large fleet) wakes the next tick at once
            # instead of waiting for the timer.
            self._wake.clear()
            self._freed.clear()
            wait = await self._tick_once()
            try:
                if self.failures:  # backing off: watch events do not cut the wait short
                    await asyncio.wait_for(stopped.wait(), timeout=wait)
                    continue
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
                if not self._freed.is_set():
                    # Let a burst of watch events land before deciding once for all of them.
                    # Not when a Job has ended: its slot is admitted at once, the next
                    # backfill's Job is on the way between two Jobs (docs/benchmarks.md).
                    await asyncio.sleep(BURST_SECONDS)
            except TimeoutError:
                pass

    async def _tick_once(self) -> float:
        """One tick, its failure reported in one line; returns the time to the next."""
        try:
            await self.tick()
        except asyncio.CancelledError:
            raise
        except (TransientError, PermanentError) as exc:
            self.failures += 1
            wait = backoff_seconds(self.settings.tick_seconds, self.failures)
            kind = "blocked" if isinstance(exc, PermanentError) else "failed"
            log.warning("reconciliation %s (%s: %s); next attempt in %.1fs", kind,
                        type(exc).__name__, exc, wait)
            if isinstance(exc, PermanentError):
                await self._report_stalled(exc)
            return wait
        except Exception:
            # A bug, not the weather: the traceback says where. Retried like a transient
            # failure; the decision is rebuilt from scratch, nothing half-done is kept.
            self.failures += 1
            wait = backoff_seconds(self.settings.tick_seconds, self.failures)
            log.exception("reconciliation failed; next attempt in %.1fs", wait)
            return wait
        if self.failures:
            log.info("reconciliation recovered after %d failed attempts", self.failures)
        self.failures = 0
        return self.settings.tick_seconds

    async def tick(self) -> Decision | None:
        if not await asyncio.to_thread(self.gate.active):
            if self.active:
                log.info("peering: another replica is in charge; standing by")
            self.active = False
            return None
        if not self.synced:
            # A decision on part of the fleet could admit the wrong backfill.
            log.info("waiting for the first list of YachtBackfills and Jobs")
            return None
        if not self.active:
            self.active = True
            log.info("in charge of %d backfills", len(self.cache.backfills))
        started = time.monotonic()
        backfills = list(self.cache.backfills.values())
        actions = await self._dead_letter_requests(backfills)
        if time.monotonic() >= self._drift_due:
            # Before the counts: a drift re-queue changes them.
            for uid, count in (await self._check_drift(backfills)).items():
                actions[uid] = replace(actions.get(uid, NO_ACTIONS), requeued_stale=count)
            await self._export_feedback_runs()
            self._drift_due = time.monotonic() + self.settings.drift_interval_seconds
        figures = await asyncio.to_thread(self.db.figures, skipped_types(backfills))
        deciding = time.monotonic()
        decision = decide(
            backfills, list(self.cache.jobs.values()),
            {yacht: f.work for yacht, f in figures.items()},
            max_concurrent_jobs=self.settings.max_concurrent_jobs,
            job_retries=self.settings.job_retries,
            rerun=_reruns(backfills, actions),
            rows={yacht: f.total for yacht, f in figures.items()})
        desired = self._desired(decision, backfills, figures, actions)
        self.metrics.decision_seconds.observe(time.monotonic() - deciding)
        await self._act(decision, desired)
        self._export(decision, desired, figures)
        if sum(item.changed for item in desired) >= RELEASE_AFTER_WRITES:
            release_memory()
        self.metrics.tick_seconds.observe(time.monotonic() - started)
        self.last_tick = time.monotonic()
        self.ticks += 1
        return decision

    def _desired(self, decision: Decision, backfills: list[ObservedBackfill],
                 figures: dict[str, YachtFigures],
                 actions: dict[str, Actions] | None = None) -> list[Desired]:
        """Each backfill's status after this decision and its Events. Pure but for the
        rate tracker's samples."""
        actions = actions or {}
        thresholds = Thresholds(self.settings.dlq_warning, self.settings.dlq_critical)
        now = datetime.now(UTC)
        admitted = {backfill.uid: job_name(backfill.namespace, backfill.name, backfill.uid,
                                           admission)
                    for backfill, admission in decision.admit}
        desired = []
        previous, self._last_inputs = self._last_inputs, {}
        for backfill in backfills:
            verdict = decision.verdicts.get(backfill.uid)
            if verdict is None:
                continue
            yacht = backfill.spec.yacht_id if backfill.spec else ""
            yacht_figures = figures.get(yacht)
            running = verdict.phase in (Phase.ADMITTED, Phase.RUNNING)
            # The rate (and the ETA from it) is shown while a Job runs, from samples taken
            # while it runs: a waiting backfill's embedded count does not move.
            rate = self.rates.observe(backfill.uid, yacht_figures.embedded
                                      if yacht_figures else 0) if running else None
            drift = self.drift.get(yacht) if backfill.spec and backfill.spec.drift.enabled \
                else None
            acted = actions.get(backfill.uid, NO_ACTIONS)
            # Same object, same verdict, same figures as last tick: same status, nothing to
            # write. Most of a large fleet waits unchanged; building its statuses again was
            # most of a tick's time.
            inputs = (backfill.resource_version, verdict, yacht_figures,
                      drift_inputs(backfill.status.drift, drift, now),
                      round(rate, 1) if rate is not None else None, acted)
            if backfill.resource_version and previous.get(backfill.uid) == inputs:
                # Last time the status built from these inputs needed no write: it is the
                # status the cluster holds.
                self._last_inputs[backfill.uid] = inputs
                desired.append(Desired(backfill, verdict, backfill.status, [], False, inputs))
                continue
            status, events = build_status(
                backfill, verdict, yacht_figures, rate=rate, drift=drift,
                thresholds=thresholds,
                job_name=admitted.get(backfill.uid) or (verdict.job.name if verdict.job
                                                        else None),
                now=now, actions=acted)
            changed = status != backfill.status
            desired.append(Desired(backfill, verdict, status, events, changed, inputs))
            if not changed:
                self._last_inputs[backfill.uid] = inputs
        return desired

    async def _act(self, decision: Decision, desired: list[Desired]) -> None:
        for job in decision.delete:
            log.info("stopping Job %s/%s", job.namespace, job.name)
            await asyncio.to_thread(self.kube.delete_job, job.namespace, job.name)
            key = (job.namespace, job.name)
            if key in self.cache.jobs:  # the watch may have shown the deletion meanwhile
                self.cache.jobs[key] = replace(job, deleting=True)
        for backfill, admission in decision.admit:
            manifest = build_job(backfill, admission, self.settings)
            name = manifest["metadata"]["name"]
            fresh = await asyncio.to_thread(self.kube.create_job, manifest)
            log.info("admitted %s/%s: Job %s%s", backfill.namespace, backfill.name, name,
                     "" if fresh else " (already there: adopted)")
            if fresh:
                self.metrics.admissions.labels(backfill.namespace).inc()
            # Until the watch shows it, the cache must know the Job exists: the next tick
            # would otherwise admit again.
            job = observe_job(manifest)
            if job is not None:
                self.cache.jobs.setdefault((job.namespace, job.name), job)
        ended = [item for item in desired if job_completed(item.backfill.status, item.verdict)]
        if ended:
            # Before the statuses that record the end are written: a write that fails is
            # followed by another tick that sees the same transition and bumps again
            # (harmless: one more cache miss), never by a bump lost.
            await asyncio.to_thread(self._bump_generations, ended)
        await self._write_all(Write(item.backfill, item.status, item.events, item.inputs)
                              for item in desired if item.changed)

    def _bump_generations(self, ended: list[Desired]) -> None:
        """Blocking (Redis): the yachts whose Job just ended get a new cache generation."""
        for item in ended:
            job, spec = item.verdict.job, item.backfill.spec
            yacht = job.yacht_id if job is not None else spec.yacht_id if spec else ""
            generation = self.generations.bump(yacht) if yacht else None
            if generation is not None:
                log.info("%s/%s: its Job ended; cache generation of yacht %s is now %d",
                         item.backfill.namespace, item.backfill.name, yacht, generation)

    async def _write_all(self, writes: Iterable[Write]) -> None:
        """Status writes are independent of each other: a few writers at a time, so a fleet
        of thousands that all change (the first tick) does not take minutes, and not a task
        per write, which for thousands is megabytes of waiting tasks."""
        pending = iter(writes)

        async def writer() -> None:
            for write in pending:
                await self._write_status(write)

        # Every writer runs to its end (none is left behind writing after the tick), then
        # the first failure, if any, fails the tick.
        results = await asyncio.gather(*(writer() for _ in range(STATUS_WRITERS)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _write_status(self, write: Write) -> None:
        backfill = write.backfill
        patch = status_patch(backfill.status, write.status)
        if patch is None:  # unequal only in what JSON does not carry (sub-second times)
            if write.inputs is not None:
                self._last_inputs[backfill.uid] = write.inputs
            return
        body = await asyncio.to_thread(
            self.kube.patch_status, backfill.namespace, backfill.name, patch)
        if body is None:
            self.cache.backfills.pop(backfill.uid, None)
            return
        self.cache.apply_backfill(body, written=write.status)
        for note in write.events:
            await self._event(backfill, note)

    async def _event(self, backfill: ObservedBackfill, note: EventNote) -> None:
        ref = {"namespace": backfill.namespace, "name": backfill.name, "uid": backfill.uid}
        await asyncio.to_thread(self.kube.post_event, ref, note.type, note.reason,
                                note.message)

    async def _report_stalled(self, exc: PermanentError) -> None:
        """`Stalled=True` on every backfill: what blocks the fleet, where users look."""
        reason, now = type(exc).__name__, datetime.now(UTC)
        writes = []
        for backfill in list(self.cache.backfills.values()):
            status, events = stalled_status(backfill, reason, str(exc), now)
            if status != backfill.status:
                writes.append(Write(backfill, status, events))
        try:
            await self._write_all(writes)
        except BackfillError as failed:  # the API server refuses that too: the log says it
            log.warning("could not report the stall on the backfills: %s", failed)

    def _export(self, decision: Decision, desired: list[Desired],
                figures: dict[str, YachtFigures]) -> None:
        self.metrics.record_backfills([
            BackfillSample(item.backfill.namespace, item.backfill.name,
                           item.backfill.spec.yacht_id if item.backfill.spec else "",
                           item.verdict.phase, item.verdict.queue_position,
                           item.status.progress.percent if item.status.progress else 0.0)
            for item in desired])
        self.rates.forget({item.backfill.uid for item in desired
                           if item.verdict.phase in (Phase.ADMITTED, Phase.RUNNING)})
        self.metrics.running_jobs.set(decision.running)
        m = self.metrics
        for yacht, f in figures.items():
            m.set_sparse(m.dlq, f.unresolved_dlq, yacht)
            m.set_sparse(m.queue_depth, f.queued + f.pending, yacht, "queued")
            m.set_sparse(m.queue_depth, f.processing, yacht, "processing")
        for yacht, d in self.drift.items():
            m.set_sparse(m.drift, d.stale_rows, yacht)

    async def _dead_letter_requests(self, backfills: list[ObservedBackfill]
                                    ) -> dict[str, Actions]:
        """Replay or abandon a yacht's dead letters once per new annotation value.

        The value acted on is recorded in the status this tick writes (status.dlq.replayed
        / .abandoned), so a restarted operator does not act twice and a new value acts
        again. (An operator that dies between the two replays once more: retrying dead
        letters is idempotent.)
        """
        actions: dict[str, Actions] = {}
        for backfill in backfills:
            if backfill.spec is None or backfill.deleting:
                continue
            dlq = backfill.status.dlq
            replay = _new_token(backfill, ANNOTATION_REPLAY_DEAD_LETTERS,
                                dlq.replayed if dlq else None)
            abandon = _new_token(backfill, ANNOTATION_ABANDON_DEAD_LETTERS,
                                 dlq.abandoned if dlq else None)
            if not replay and not abandon:
                continue
            yacht = backfill.spec.yacht_id
            acted = Actions(replayed=replay, abandoned=abandon)
            if replay:
                count = await asyncio.to_thread(self.db.replay_dead_letters, yacht)
                acted = replace(acted, replayed_count=count)
            if abandon:
                count = await asyncio.to_thread(self.db.abandon_dead_letters, yacht)
                acted = replace(acted, abandoned_count=count)
            log.info("%s/%s: dead letters of yacht %s: %d re-queued, %d abandoned",
                     backfill.namespace, backfill.name, yacht, acted.replayed_count,
                     acted.abandoned_count)
            actions[backfill.uid] = acted
        return actions

    async def _export_feedback_runs(self) -> None:
        """The nightly feedback job is a short-lived pod; its results are exported here."""
        runs = await asyncio.to_thread(self.db.feedback_runs)
        for yacht, (terms, _objects, at) in runs.items():
            self.metrics.feedback_terms.labels(yacht).set(terms)
            self.metrics.feedback_last_run.labels(yacht).set(at)

    async def _check_drift(self, backfills: list[ObservedBackfill]) -> dict[str, int]:
        """Each yacht's stale rows into `self.drift`; returns the rows re-queued for each
        backfill (by uid) of a yacht whose stale rows drift.autoRequeue re-queued."""
        probes, requeue = [], set()
        for backfill in backfills:
            spec = backfill.spec
            if spec is None or not spec.drift.enabled or backfill.deleting:
                continue
            if spec.drift.auto_requeue and not spec.suspend:
                requeue.add(spec.yacht_id)
            for source in spec.drift.sources:
                probes.append(DriftProbe(
                    yacht_id=spec.yacht_id, object_type=source.object_type,
                    table=source.table, id_column=source.id_column,
                    updated_column=source.updated_at_column,
                    tolerance_minutes=spec.drift.tolerance_minutes))
        if not probes:
            return {}
        stale, requeued = await asyncio.to_thread(self.db.drift, probes, requeue=requeue)
        checked = datetime.now(UTC)
        for yacht in {p.yacht_id for p in probes}:
            self.drift[yacht] = DriftStatus(stale_rows=stale.get(yacht, 0),
                                            last_checked_at=checked)
        for yacht, count in requeued.items():
            log.warning("drift: re-queued %d stale rows of yacht %s", count, yacht)
        return {backfill.uid: requeued[backfill.spec.yacht_id] for backfill in backfills
                if backfill.spec and requeued.get(backfill.spec.yacht_id)}


def _new_token(backfill: ObservedBackfill, annotation: str, done: str | None) -> str | None:
    """The annotation's value when it asks for something not done yet."""
    token = backfill.annotations.get(annotation)
    return token[:253] if token and token[:253] != done else None


def _reruns(backfills: list[ObservedBackfill], actions: dict[str, Actions]) -> set[str]:
    """Backfills asked to run again although they Succeeded (even in mode Once): their dead
    letters were replayed, or drift.autoRequeue re-queued their stale rows."""
    return {b.uid for b in backfills
            if (acted := actions.get(b.uid)) is not None
            and (acted.replayed_count or acted.requeued_stale)}
