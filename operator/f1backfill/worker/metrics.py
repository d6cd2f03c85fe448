"""The worker's Prometheus metrics, under the names the chart's alerts and dashboard expect.

Each worker gets its own registry (tests run several in one process); the HTTP server in
health.py serves it.
"""

from __future__ import annotations

import resource
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..edgekv import publish_failures_counter
from ..generations import bump_failures_counter


def rss_mb() -> float:
    """Current resident memory in MiB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.processed = Counter(
            "f1_embeddings_processed_total", "Total embeddings processed",
            ["yacht_id", "status"], registry=r)  # status: success, failed, skipped
        self.requests = Counter(
            "f1_openai_requests_total", "Total embedding API requests",
            ["status"], registry=r)  # status: success, rate_limited, error, invalid_input
        self.tokens = Counter(
            "f1_embedding_tokens_total", "Tokens the provider counted", registry=r)
        self.dead_letters = Counter(
            "f1_dead_letters_total", "Rows sent to embedding_dlq",
            ["yacht_id", "code"], registry=r)
        self.queue_depth = Gauge(
            "f1_embedding_queue_depth", "Current embedding queue depth",
            ["yacht_id", "status"], registry=r)  # status: queued, processing
        self.breaker_state = Gauge(
            "f1_circuit_breaker_state", "Circuit breaker state (0=closed, 1=open, 2=half-open)",
            registry=r)
        self.memory_mb = Gauge(
            "f1_worker_memory_mb", "Current worker memory usage in MB", registry=r)
        self.memory_mb.set_function(rss_mb)
        self.latency = Histogram(
            "f1_embedding_latency_seconds", "Embedding API call latency",
            buckets=[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0], registry=r)
        self.batch_seconds = Histogram(
            "f1_batch_processing_seconds", "Time to process one batch",
            buckets=[1, 2, 5, 10, 30, 60], registry=r)
        # f1_cache_generation_bump_failures_total: batches whose bump of the yacht's cache
        # generation failed (Redis away); the batch itself is unaffected.
        self.generation_bump_failures = bump_failures_counter(r)
        # f1_edge_generation_publish_failures_total: bumps not written to the edge's KV
        # (Cloudflare away or refusing); the batch itself is unaffected.
        self.edge_publish_failures = publish_failures_counter(r)
