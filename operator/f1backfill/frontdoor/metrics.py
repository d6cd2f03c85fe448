"""The front door's own metrics, on its own registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class FrontDoorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "f1_search_requests_total", "Requests to the front door by endpoint and status",
            ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "f1_search_request_seconds", "Time to answer a request, by endpoint",
            ["endpoint"], registry=r,
            buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
        self.cache_hits = Counter(
            "f1_search_cache_hits_total", "Searches answered from the cache", registry=r)
        self.cache_misses = Counter(
            "f1_search_cache_misses_total", "Searches the cache did not hold", registry=r)
        self.cache_errors = Counter(
            "f1_search_cache_errors_total", "Cache calls that failed (Redis away)",
            registry=r)
        self.prewarm_runs = Counter(
            "f1_search_prewarm_runs_total", "Login pre-warms started", registry=r)
        self.prewarm_failures = Counter(
            "f1_search_prewarm_failures_total",
            "Pre-warm searches that failed (the login is unaffected)", registry=r)
        self.prewarmed = Counter(
            "f1_search_prewarmed_total", "Searches a pre-warm computed and cached", registry=r)
