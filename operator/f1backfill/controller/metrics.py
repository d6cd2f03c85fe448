"""The operator's own metrics (the workers export theirs).

f1_dlq_unresolved is what the DLQ alerts fire on: an alert needs a metric, and Prometheus
cannot count rows of embedding_dlq, so the operator counts once per tick and exports the
number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..api import Phase
from ..edgekv import publish_failures_counter
from ..generations import bump_failures_counter

_BACKFILL_LABELS = ("namespace", "name", "yacht_id")


@dataclass(frozen=True, slots=True)
class BackfillSample:
    namespace: str
    name: str
    yacht_id: str
    phase: Phase
    queue_position: int | None
    percent: float


class BackfillCollector(Collector):
    """The per-backfill series, made at scrape time from the last tick's samples.

    prometheus_client's labelled Gauge keeps an object (with its own lock) per series for
    the life of the process; three per backfill was megabytes for a large fleet, to hold
    numbers the reconciler has anyway. The samples list is replaced whole each tick, so a
    deleted backfill's series are gone at the next scrape.
    """

    def __init__(self) -> None:
        self.samples: list[BackfillSample] = []

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phase, position, progress = self._families()
        for s in self.samples:  # one list for the scrape, even if a tick replaces it meanwhile
            labels = [s.namespace, s.name, s.yacht_id]
            # One series per backfill for its current phase (value 1), not one per phase.
            phase.add_metric([*labels, s.phase.value], 1)
            if s.queue_position:  # sparse: absent reads as "not in the queue"
                position.add_metric(labels, s.queue_position)
            progress.add_metric(labels, s.percent)
        yield from (phase, position, progress)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("f1_backfill_phase",
                              "1, labelled with the phase each backfill is in",
                              labels=[*_BACKFILL_LABELS, "phase"]),
            GaugeMetricFamily("f1_backfill_queue_position",
                              "Position in the admission queue (absent: not waiting)",
                              labels=_BACKFILL_LABELS),
            GaugeMetricFamily("f1_backfill_progress_percent",
                              "Percent of the yacht's rows embedded", labels=_BACKFILL_LABELS),
        )


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.admissions = Counter(
            "f1_operator_admissions_total", "Jobs the operator created", ["namespace"],
            registry=r)
        self.backfills = BackfillCollector()
        r.register(self.backfills)
        self._sparse: dict[Gauge, set[tuple[str, ...]]] = {}  # see set_sparse
        self.dlq = Gauge(
            "f1_dlq_unresolved", "Unresolved dead letters per yacht", ["yacht_id"], registry=r)
        self.drift = Gauge(
            "f1_drift_stale_rows", "search_index rows older than their source", ["yacht_id"],
            registry=r)
        self.queue_depth = Gauge(
            "f1_embedding_queue_depth", "Rows waiting for an embedding", ["yacht_id", "status"],
            registry=r)
        self.running_jobs = Gauge(
            "f1_operator_running_jobs", "Embedding Jobs not finished", registry=r)
        self.feedback_terms = Gauge(
            "f1_feedback_terms_added", "Query terms the last feedback run learned",
            ["yacht_id"], registry=r)
        self.feedback_last_run = Gauge(
            "f1_feedback_last_run_timestamp_seconds", "When the last feedback run ended",
            ["yacht_id"], registry=r)
        self.decision_seconds = Histogram(
            "f1_operator_decision_seconds",
            "Time of one fleet-wide decision (admission and desired statuses, no I/O)",
            buckets=[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registry=r)
        self.tick_seconds = Histogram(
            "f1_operator_tick_seconds",
            "Time of one reconciliation tick: database reads, decision, API writes",
            buckets=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registry=r)
        # f1_cache_generation_bump_failures_total: finished Jobs whose bump of the yacht's
        # cache generation failed (Redis away).
        self.generation_bump_failures = bump_failures_counter(r)
        # f1_edge_generation_publish_failures_total: bumps of finished Jobs not written to
        # the edge's KV (Cloudflare away or refusing).
        self.edge_publish_failures = publish_failures_counter(r)

    def record_backfills(self, samples: list[BackfillSample]) -> None:
        """Every backfill's phase, queue position and progress, as of this tick."""
        self.backfills.samples = samples

    def set_sparse(self, gauge: Gauge, value: float, *labels: str) -> None:
        """Per-yacht gauges that are zero for most of a large fleet (dead letters, drift,
        queue depth) exist only while non-zero: an absent series reads as zero in the alert
        rules, and 10,000 yachts do not cost 10,000 series each. The series set are
        remembered, so the zeros of a large fleet cost a set lookup each, not a failed
        removal."""
        present = self._sparse.setdefault(gauge, set())
        if value:
            gauge.labels(*labels).set(value)
            present.add(labels)
        elif labels in present:
            present.discard(labels)
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
