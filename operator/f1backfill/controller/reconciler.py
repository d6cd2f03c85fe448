"""The fleet reconciler: one decision for the whole fleet per tick, level-based.

The backfill informer (every YachtBackfill) and kopf's Job watch (every Job of ours) feed
`FleetCache` and wake the loop; a timer makes sure progress is re-read every `tick_seconds`
even when nothing in the cluster moves. Each tick reads the database once (grouped by
yacht), decides with the pure `admission.decide`, then acts: deletes Jobs that must stop,
creates Jobs that were admitted (deterministic names: a repeat is a 409, adopted), and
writes each backfill's status only when it changed, with an Event per transition.

Only the replica that kopf's peering lets run acts (see `PeeringGate`): two replicas never
both admit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..admission import Decision, ObservedBackfill, ObservedJob, Verdict, decide
from ..api import BackfillStatus, DriftStatus, Phase, job_name
from ..builders.job import build_job
from ..builders.status import (
    DRIFT_STAMP_REFRESH,
    EventNote,
    Thresholds,
    build_status,
    status_patch,
)
from ..config import OperatorSettings
from ..constants import ANNOTATION_ABANDON_DEAD_LETTERS, ANNOTATION_REPLAY_DEAD_LETTERS
from ..db.figures import DriftProbe, YachtFigures
from ..db.fleet import FleetDatabase
from .informer import BackfillInformer
from .kube import Kube
from .metrics import BackfillSample, OperatorMetrics
from .observe import observe_backfill, observe_job

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 300.0


STATUS_WRITERS = 8
# A tick that wrote this many statuses (the first one of a large fleet) leaves megabytes of
# freed response bodies behind; hand them back to the system rather than keep the peak.
RELEASE_AFTER_WRITES = 500


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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


class FleetCache:
    """What the watch streams have shown: backfills by uid, our Jobs by (namespace, name)."""

    def __init__(self) -> None:
        self.backfills: dict[str, ObservedBackfill] = {}
        self.jobs: dict[tuple[str, str], ObservedJob] = {}

    def put_backfill(self, backfill: ObservedBackfill) -> None:
        self.backfills[backfill.uid] = backfill

    def apply_backfill(self, body: Mapping[str, Any],
                       written: BackfillStatus | None = None) -> None:
        """A backfill's body as the API server returned it after a status write. When its
        status reads as `written` (the status just sent), that object is kept instead of a
        copy: after the first tick of a large fleet the two would double the cache."""
        backfill = observe_backfill(body)
        if written is not None and backfill.status == written:
            backfill = replace(backfill, status=written)
        self.put_backfill(backfill)

    def replace_backfills(self, namespace: str | None,
                          backfills: dict[str, ObservedBackfill]) -> None:
        """Every backfill of `namespace` (of all namespaces: None), as a list showed them."""
        if namespace is None:
            self.backfills = dict(backfills)
            return
        for uid in [uid for uid, b in self.backfills.items() if b.namespace == namespace]:
            if uid not in backfills:
                del self.backfills[uid]
        self.backfills.update(backfills)

    def apply_job(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        job = observe_job(body)
        if event_type == "DELETED" or job is None:
            self.jobs.pop(key, None)
        else:
            self.jobs[key] = job

    def replace_jobs(self, jobs: list[dict]) -> None:
        self.jobs = {}
        for body in jobs:
            self.apply_job(None, body)


class PeeringGate:
    """Acts only when kopf's peering would let this replica process events.

    kopf pauses a replica while a live peer has a higher (or the same) priority; its event
    handlers stop, but a background loop like ours would not notice. So the loop applies
    kopf's own rule to the peering object kopf maintains: our identity registered, no other
    live peer at our priority or above.
    """

    def __init__(self, kube: Kube, settings: OperatorSettings, identity: str,
                 priority: int) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = identity
        self.priority = priority

    def active(self) -> bool:
        if self.settings.standalone:
            return True
        namespace = self.settings.namespaces[0] if self.settings.namespaces else None
        body = self.kube.get_peering(self.settings.peering_name, namespace)
        peers = (body or {}).get("status") or {}
        if self.identity not in peers:
            return False  # kopf has not announced us yet
        now = datetime.now(UTC)
        for identity, info in peers.items():
            if identity == self.identity or not isinstance(info, dict):
                continue
            try:
                seen = datetime.fromisoformat(str(info.get("lastseen")))
                alive = (now - seen).total_seconds() < float(info.get("lifetime", 60))
            except ValueError:
                alive = True
            if alive and int(info.get("priority", 0)) >= self.priority:
                return False
        return True


class RateTracker:
    """Rows embedded per minute over the last few minutes, per backfill (display only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, uid: str, embedded: int) -> float | None:
        now = self._clock()
        samples = self._samples.setdefault(uid, deque())
        samples.append((now, embedded))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_SECONDS:
            samples.popleft()
        (t0, e0), (t1, e1) = samples[0], samples[-1]
        if t1 - t0 < 1.0 or e1 < e0:
            return None
        return (e1 - e0) * 60.0 / (t1 - t0)

    def forget(self, present: set[str]) -> None:
        for uid in set(self._samples) - present:
            del self._samples[uid]


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


class Reconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube, db: FleetDatabase,
                 metrics: OperatorMetrics, gate: PeeringGate,
                 informer: BackfillInformer | None = None) -> None:
        self.settings = settings
        self.informer = informer
        self.kube = kube
        self.db = db
        self.metrics = metrics
        self.gate = gate
        self.cache = FleetCache()
        self.rates = RateTracker()
        self.drift: dict[str, DriftStatus] = {}  # by yacht id
        self._drift_due = 0.0
        self._wake = asyncio.Event()
        # Per backfill: the inputs of a status that needed no write, to skip rebuilding it.
        self._last_inputs: dict[str, tuple] = {}
        self.active = False
        self.last_tick: float | None = None
        self.ticks = 0

    # -- fed by the backfill informer (a BackfillSink) ---------------------------------------
    def known_backfill(self, uid: str) -> ObservedBackfill | None:
        return self.cache.backfills.get(uid)

    def backfills_listed(self, namespace: str | None,
                         backfills: dict[str, ObservedBackfill]) -> None:
        self.cache.replace_backfills(namespace, backfills)
        self._wake.set()

    def backfill_seen(self, backfill: ObservedBackfill) -> None:
        if self.cache.backfills.get(backfill.uid) is not backfill:
            self.cache.put_backfill(backfill)
            self._wake.set()

    def backfill_gone(self, uid: str) -> None:
        self.cache.backfills.pop(uid, None)
        self._wake.set()

    # -- fed by kopf's handler ---------------------------------------------------------------
    def on_job(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.cache.apply_job(event_type, body)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, stopped: asyncio.Event) -> None:
        if self.informer is not None:
            self.informer.start(asyncio.get_running_loop(), self)
        try:
            await self._loop(stopped)
        finally:
            if self.informer is not None:
                self.informer.stop()

    async def _loop(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed tick (API or database blip) is retried at the next one; the
                # decision is rebuilt from scratch, so nothing half-done is remembered.
                log.exception("reconciliation failed; retrying")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.tick_seconds)
                # Let a burst of watch events land before deciding once for all of them.
                await asyncio.sleep(0.1)
            except TimeoutError:
                pass

    async def tick(self) -> Decision | None:
        if not await asyncio.to_thread(self.gate.active):
            if self.active:
                log.info("peering: another replica is in charge; standing by")
            self.active = False
            return None
        if self.informer is not None and not self.informer.synced:
            # A decision on part of the fleet could admit the wrong backfill.
            log.info("waiting for the first list of YachtBackfills")
            return None
        if not self.active:
            # (Re)gaining charge: kopf pauses its Job watch while another replica leads, so
            # the Jobs may be stale; start exact. (The backfill informer never pauses.)
            self.cache.replace_jobs(await asyncio.to_thread(self.kube.list_jobs))
            self.active = True
            log.info("in charge of %d backfills", len(self.cache.backfills))
        started = time.monotonic()
        await self._dead_letter_requests(list(self.cache.backfills.values()))
        backfills = list(self.cache.backfills.values())
        if time.monotonic() >= self._drift_due:
            # Before the counts: a drift re-queue changes them.
            await self._check_drift(backfills)
            await self._export_feedback_runs()
            self._drift_due = time.monotonic() + self.settings.drift_interval_seconds
        figures = await asyncio.to_thread(self.db.figures, skipped_types(backfills))
        deciding = time.monotonic()
        decision = decide(
            backfills, list(self.cache.jobs.values()),
            {yacht: f.work for yacht, f in figures.items()},
            max_concurrent_jobs=self.settings.max_concurrent_jobs,
            job_retries=self.settings.job_retries)
        desired = self._desired(decision, backfills, figures)
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
                 figures: dict[str, YachtFigures]) -> list[Desired]:
        """Each backfill's status after this decision and its Events. Pure but for the
        rate tracker's samples."""
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
            # Same object, same verdict, same figures as last tick: same status, nothing to
            # write. Most of a large fleet waits unchanged; building its statuses again was
            # most of a tick's time.
            inputs = (backfill.resource_version, verdict, yacht_figures,
                      drift_inputs(backfill.status.drift, drift, now),
                      round(rate, 1) if rate is not None else None)
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
                now=now)
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
        # Status writes are independent of each other: a few writers at a time, so a fleet
        # of thousands that all change (the first tick) does not take minutes, and not a
        # task per write, which for thousands is megabytes of waiting tasks.
        changed = iter([item for item in desired if item.changed])

        async def writer() -> None:
            for item in changed:
                await self._write_status(item)

        await asyncio.gather(*(writer() for _ in range(STATUS_WRITERS)))

    async def _write_status(self, item: Desired) -> None:
        backfill = item.backfill
        patch = status_patch(backfill.status, item.status)
        if patch is None:  # unequal only in what JSON does not carry (sub-second times)
            self._last_inputs[backfill.uid] = item.inputs
            return
        body = await asyncio.to_thread(
            self.kube.patch_status, backfill.namespace, backfill.name, patch)
        if body is None:
            self.cache.backfills.pop(backfill.uid, None)
            return
        self.cache.apply_backfill(body, written=item.status)
        for note in item.events:
            await self._event(backfill, note.type, note.reason, note.message)

    async def _event(self, backfill: ObservedBackfill, type_: str, reason: str,
                     message: str) -> None:
        ref = {"namespace": backfill.namespace, "name": backfill.name, "uid": backfill.uid}
        await asyncio.to_thread(self.kube.post_event, ref, type_, reason, message)

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

    async def _dead_letter_requests(self, backfills: list[ObservedBackfill]) -> None:
        """Replay or abandon a yacht's dead letters once per new annotation value.

        The value acted on is recorded in the status (status.dlq.replayed / .abandoned),
        so a restarted operator does not act twice and a new value acts again.
        """
        for backfill in backfills:
            if backfill.spec is None or backfill.deleting:
                continue
            dlq = backfill.status.dlq
            for annotation, done, action in (
                    (ANNOTATION_REPLAY_DEAD_LETTERS, dlq.replayed if dlq else None, "replayed"),
                    (ANNOTATION_ABANDON_DEAD_LETTERS, dlq.abandoned if dlq else None,
                     "abandoned")):
                token = backfill.annotations.get(annotation)
                if not token or token == done:
                    continue
                yacht = backfill.spec.yacht_id
                if action == "replayed":
                    count = await asyncio.to_thread(self.db.replay_dead_letters, yacht)
                    message = f"re-queued {count} dead letters of the yacht ({annotation}={token})"
                else:
                    count = await asyncio.to_thread(self.db.abandon_dead_letters, yacht)
                    message = f"abandoned {count} dead letters of the yacht ({annotation}={token})"
                log.info("%s/%s: %s", backfill.namespace, backfill.name, message)
                patch: dict[str, Any] = {"dlq": {action: token[:253]}}
                if action == "replayed" and count and backfill.status.phase is Phase.SUCCEEDED:
                    patch["phase"] = Phase.PENDING.value  # asked for: runs again, even Once
                body = await asyncio.to_thread(
                    self.kube.patch_status, backfill.namespace, backfill.name, patch)
                if body is None:
                    break
                self.cache.apply_backfill(body)
                backfill = self.cache.backfills[backfill.uid]
                reason = "DeadLettersReplayed" if action == "replayed" else "DeadLettersAbandoned"
                await self._event(backfill, "Normal", reason, message)

    async def _export_feedback_runs(self) -> None:
        """The nightly feedback job is a short-lived pod; its results are exported here."""
        runs = await asyncio.to_thread(self.db.feedback_runs)
        for yacht, (terms, _objects, at) in runs.items():
            self.metrics.feedback_terms.labels(yacht).set(terms)
            self.metrics.feedback_last_run.labels(yacht).set(at)

    async def _check_drift(self, backfills: list[ObservedBackfill]) -> None:
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
            return
        stale, requeued = await asyncio.to_thread(self.db.drift, probes, requeue=requeue)
        checked = datetime.now(UTC)
        for yacht in {p.yacht_id for p in probes}:
            self.drift[yacht] = DriftStatus(stale_rows=stale.get(yacht, 0),
                                            last_checked_at=checked)
        for yacht, count in requeued.items():
            log.warning("drift: re-queued %d stale rows of yacht %s", count, yacht)
            for backfill in backfills:
                if backfill.spec and backfill.spec.yacht_id == yacht:
                    await self._event(
                        backfill, "Normal", "DriftRequeued",
                        f"re-queued {count} stale rows for embedding (drift.autoRequeue)")
                    if backfill.status.phase is Phase.SUCCEEDED:
                        # Opted in to re-embedding: the backfill runs again, even in Once mode.
                        body = await asyncio.to_thread(
                            self.kube.patch_status, backfill.namespace, backfill.name,
                            {"phase": Phase.PENDING.value})
                        if body is not None:
                            self.cache.apply_backfill(body)
