"""The embedding worker: drains one yacht's queue and exits 0 when it is empty.

`max_in_flight` lanes each run claim -> embed -> write; the lanes share the rate limiter,
the circuit breaker and the token estimator, so the budget is the worker's, and several
requests are in flight when provider latency rather than the limit is the bottleneck.
A heartbeat thread renews the leases of everything claimed; shutdown is an event.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from ..config import WorkerSettings
from ..constants import Provider
from ..edgekv import EdgeGenerations
from ..errors import AuthFailed, SchemaMismatch
from ..generations import Generations
from .breaker import CircuitBreaker
from .embedder import Embedder
from .health import HealthServer, HealthState
from .metrics import WorkerMetrics
from .providers import EmbeddingProvider, build_provider
from .queue import Queue
from .ratelimit import RateLimiter, SharedBucket, account_id
from .textprep import TokenEstimator

log = logging.getLogger(__name__)

EXIT_DONE = 0
EXIT_FATAL = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM: the Job controller should run us again


@dataclass
class RunSummary:
    embedded: int = 0
    dead_lettered: int = 0
    retried: int = 0
    batches: int = 0
    exit_code: int = EXIT_DONE


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        provider: EmbeddingProvider | None = None,
        metrics: WorkerMetrics | None = None,
        limiter: RateLimiter | None = None,
        generations: Generations | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.stop = threading.Event()
        self.metrics = metrics or WorkerMetrics()
        self.health = HealthState(self.metrics)
        self.provider = provider or build_provider(settings)
        self.limiter = limiter or RateLimiter(
            settings.requests_per_minute, settings.tokens_per_minute)
        self.breaker = CircuitBreaker(
            settings.circuit_breaker_threshold, settings.circuit_breaker_reset_sec,
            on_change=self._breaker_changed)
        self.metrics.breaker_state.set(0)
        self.estimator = TokenEstimator()
        # Each batch that stored embeddings bumps the yacht's cache generation, and
        # publishes it to the edge's KV (each a no-op unless configured; a failure is
        # counted, never raised).
        self._own_generations = generations is None
        self.generations = generations or Generations(
            settings.redis_url, failures=self.metrics.generation_bump_failures,
            edge=EdgeGenerations.from_settings(settings, self.metrics.edge_publish_failures))
        self.summary = RunSummary()
        self._lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._terminated = False  # SIGTERM, as opposed to a stop after a fatal error

    # -- lifecycle -----------------------------------------------------------------------
    def run(self) -> RunSummary:
        s = self.settings
        log.info("worker %s starting for yacht %s with %s", self.name, s.yacht_id,
                 {k: v for k, v in s.redacted().items() if k != "yacht_id"})
        server = HealthServer(self.health, s.prometheus_port) if s.prometheus_port else None
        if server:
            server.start()
        control = Queue(s.database_url, s.yacht_id, self.name, s.lease_timeout_sec)
        shared = None
        try:
            self._prepare(control)
            shared = self._join_account()
            lanes = [threading.Thread(target=self._lane, args=(n,), name=f"lane-{n}", daemon=True)
                     for n in range(s.max_in_flight)]
            for lane in lanes:
                lane.start()
            self._supervise(control, lanes)
        finally:
            control.close()
            if shared is not None:
                shared.close()
            self.provider.close()
            if self._own_generations:
                self.generations.close()
            if server:
                server.stop()
        self.summary.exit_code = self._exit_code()
        log.info("worker %s finished: %s", self.name, self.summary)
        return self.summary

    def terminate(self) -> None:
        """SIGTERM: finish what is in flight, release the rest, exit promptly."""
        self._terminated = True
        self.stop.set()

    def _prepare(self, control: Queue) -> None:
        """Before the lanes start: the schema matches, dead workers' rows are back in the
        queue, skipped types set aside, and the yacht's pending rows queued."""
        s = self.settings
        self._check_schema(control)
        reclaimed = control.reclaim_expired()
        if reclaimed:
            log.warning("reclaimed %d rows whose worker's lease expired", reclaimed)
        control.skip_types(s.skip_object_types)
        queued = control.enqueue_pending(s.skip_object_types)
        log.info("queued %d pending rows", queued)
        self._update_depth(control)

    def _join_account(self) -> SharedBucket | None:
        """OpenAI's budget belongs to the account (key and model), not to this worker: its
        requests also reserve from the account's bucket in Postgres, which every worker on
        the same account shares (ratelimit.SharedBucket). The offline embedder has none."""
        s = self.settings
        if s.provider != Provider.OPENAI or self.limiter.shared is not None:
            return None
        shared = SharedBucket(
            s.database_url, account_id(s.openai_api_key, s.model),
            s.account_requests_per_minute or s.requests_per_minute,
            s.account_tokens_per_minute or s.tokens_per_minute,
            name=f"f1backfill-budget {self.name}")
        level = shared.level
        log.info("sharing the account's budget: %.0f requests and %.0f tokens available now "
                 "(of %.0f/min and %.0f/min)", level.requests, level.tokens,
                 level.requests_per_minute, level.tokens_per_minute)
        self.limiter.attach(shared)
        return shared

    def _exit_code(self) -> int:
        """EXIT_FATAL for an auth failure (a person must act), EXIT_TERMINATED after SIGTERM;
        any other lane failure is raised."""
        if isinstance(self._fatal, AuthFailed):
            return EXIT_FATAL
        if self._fatal is not None:
            raise self._fatal
        return EXIT_TERMINATED if self._terminated else EXIT_DONE

    def _check_schema(self, queue: Queue) -> None:
        declared = queue.embedding_dimensions()
        if declared is not None and declared != self.settings.dimensions:
            raise SchemaMismatch(
                f"search_index.embedding is vector({declared}) but EMBEDDING_DIMENSIONS="
                f"{self.settings.dimensions}")

    def _supervise(self, control: Queue, lanes: list[threading.Thread]) -> None:
        """Heartbeat leases and refresh gauges until every lane has finished."""
        interval = max(0.5, min(self.settings.lease_timeout_sec / 3, 15.0))
        while any(lane.is_alive() for lane in lanes):
            for lane in lanes:
                lane.join(timeout=interval / len(lanes))
            try:
                control.heartbeat()
                self._update_depth(control)
            except Exception:  # a blip must not kill the heartbeat; the lanes will notice
                log.exception("heartbeat failed")

    def _update_depth(self, queue: Queue) -> None:
        state = queue.state()
        yacht = self.settings.yacht_id
        self.metrics.queue_depth.labels(yacht, "queued").set(state.queued)
        self.metrics.queue_depth.labels(yacht, "processing").set(state.processing)
        self.health.pending = state.queued

    def _breaker_changed(self, state) -> None:
        self.metrics.breaker_state.set(int(state))
        self.health.breaker_open = int(state) == 1
        log.warning("circuit breaker is now %s", state.name.lower())

    # -- one lane ------------------------------------------------------------------------
    def _lane(self, number: int) -> None:
        s = self.settings
        queue = None
        try:
            queue = Queue(s.database_url, s.yacht_id, f"{self.name}", s.lease_timeout_sec)
            embedder = self._embedder()
            idle_since: float | None = None
            while not self.stop.is_set():
                rows = queue.claim(s.batch_size)
                if not rows:
                    wait = self._idle_wait(queue, idle_since)
                    if wait is None:
                        return
                    idle_since = idle_since or time.monotonic()
                    self.stop.wait(wait)
                    continue
                idle_since = None
                self._batch(queue, embedder, rows)
                if s.batch_sleep_sec:
                    self.stop.wait(s.batch_sleep_sec)
        except BaseException as exc:
            with self._lock:
                self._fatal = self._fatal or exc
            if not isinstance(exc, AuthFailed):
                log.exception("lane %d failed", number)
            self.stop.set()
        finally:
            if queue is not None:
                queue.close()

    @staticmethod
    def _release(queue: Queue, rows) -> None:
        try:
            queue.release(rows)
        except Exception as exc:  # the database itself is away: the lease takes over
            log.warning("could not release %d claimed rows (%s); they return to the queue "
                        "when their lease expires", len(rows), exc)

    def _embedder(self) -> Embedder:
        """A lane's embedder: its own batch state, the worker's shared budget and breaker."""
        s = self.settings
        return Embedder(
            self.provider, self.limiter, self.breaker, self.estimator, self.metrics,
            yacht_id=s.yacht_id, dimensions=s.dimensions, max_chars=s.max_embedding_chars,
            max_attempts=s.max_attempts, backoff_seconds=s.retry_backoff_sec,
            cancelled=self.stop)

    def _idle_wait(self, queue: Queue, idle_since: float | None) -> float | None:
        """How long to wait for more work, or None to finish."""
        queue.reclaim_expired()
        state = queue.state()
        if state.ready:
            return 0.0  # another lane's rows came back, or a lease expired just now
        if state.queued:
            # Rows backing off after a failure: wait for the first to become available.
            return max(0.05, min(state.next_in_seconds or 0.5, 5.0))
        idle_for = 0.0 if idle_since is None else time.monotonic() - idle_since
        if idle_for < self.settings.idle_timeout_sec:
            queue.enqueue_pending(self.settings.skip_object_types)
            return min(1.0, self.settings.idle_timeout_sec - idle_for)
        return None

    def _batch(self, queue: Queue, embedder: Embedder, rows) -> None:
        started = time.monotonic()
        settled = False
        try:
            outcome = embedder.embed(rows)
            embedded = queue.complete(outcome.done, outcome.failures, outcome.retries,
                                      self.settings.model, provider=self.settings.provider)
            settled = True
        finally:
            if not settled:
                # An auth failure, a database error while writing the batch (its transaction
                # rolled back), a bug: every row goes back now, uncharged, instead of
                # waiting for its lease to expire, which would cost it an attempt.
                self._release(queue, rows)
        queue.release(outcome.unsent)
        yacht = self.settings.yacht_id
        self.metrics.processed.labels(yacht, "success").inc(embedded)
        self.metrics.processed.labels(yacht, "failed").inc(len(outcome.failures))
        for failure in outcome.failures:
            self.metrics.dead_letters.labels(yacht, failure.code).inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        with self._lock:
            s = self.summary
            s.embedded += embedded
            s.dead_lettered += len(outcome.failures)
            s.retried += len(outcome.retries)
            s.batches += 1
        if embedded:
            # After the commit: a search that misses now reads the new vectors.
            self.generations.bump(yacht)
        self.health.batch_done(success=bool(outcome.done) or not outcome.retries,
                               consecutive_failures=self.breaker.consecutive_failures)
