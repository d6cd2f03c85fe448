"""The operator's own metrics (the workers export theirs).

f1_dlq_unresolved is what the DLQ alerts fire on: the playbook wrote those alerts as SQL,
which Prometheus cannot evaluate; the operator counts once per tick and exports the number.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..api import Phase


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.admissions = Counter(
            "f1_operator_admissions_total", "Jobs the operator created", ["namespace"],
            registry=r)
        self.phase = Gauge(
            "f1_backfill_phase", "1, labelled with the phase each backfill is in",
            ["namespace", "name", "yacht_id", "phase"], registry=r)
        self.queue_position = Gauge(
            "f1_backfill_queue_position", "Position in the admission queue (absent: not waiting)",
            ["namespace", "name", "yacht_id"], registry=r)
        self.progress = Gauge(
            "f1_backfill_progress_percent", "Percent of the yacht's rows embedded",
            ["namespace", "name", "yacht_id"], registry=r)
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
        self._phases: dict[tuple[str, str, str], Phase] = {}

    def record(self, key: tuple[str, str, str], phase: Phase, position: int | None,
               percent: float) -> None:
        """One series per backfill for its current phase (value 1), not one per phase:
        with thousands of backfills, seven series each is most of the operator's memory."""
        namespace, name, yacht = key
        previous = self._phases.get(key)
        if previous is not phase:
            if previous is not None:
                self.phase.remove(namespace, name, yacht, previous.value)
            self.phase.labels(namespace, name, yacht, phase.value).set(1)
            self._phases[key] = phase
        # Sparse: a series only while waiting; absent reads as "not in the queue".
        if position:
            self.queue_position.labels(namespace, name, yacht).set(position)
        else:
            self._remove(self.queue_position, namespace, name, yacht)
        self.progress.labels(namespace, name, yacht).set(percent)

    def forget_missing(self, present: set[tuple[str, str, str]]) -> None:
        """Drop the series of deleted backfills, so dashboards do not show ghosts."""
        for key in set(self._phases) - present:
            namespace, name, yacht = key
            self.phase.remove(namespace, name, yacht, self._phases.pop(key).value)
            self._remove(self.queue_position, namespace, name, yacht)
            self._remove(self.progress, namespace, name, yacht)

    def set_sparse(self, gauge: Gauge, value: float, *labels: str) -> None:
        """Per-yacht gauges that are zero for most of a large fleet (dead letters, drift,
        queue depth) exist only while non-zero: an absent series reads as zero in the alert
        rules, and 10,000 yachts do not cost 10,000 series each."""
        if value:
            gauge.labels(*labels).set(value)
        else:
            self._remove(gauge, *labels)

    @staticmethod
    def _remove(gauge: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
