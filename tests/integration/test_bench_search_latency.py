"""bench/search_latency.py at a tiny size: it starts its own PostgreSQL, Redis, server and
load generator, and prints the figures docs/benchmarks.md quotes. Run here so that a change
to the front door or the schema cannot leave it broken until the next measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--yachts", "2", "--per-yacht", "120", "--requests", "8", "--cached-pairs", "3",
        "--concurrency", "2", "--throughput-seconds", "0.5", "--prewarm-runs", "1",
        "--index-queries", "4", "--ef-search", "40", "--shared-buffers", "128MB",
        "--build-memory", "64MB"]
LATENCY = {"n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}


@pytest.mark.slow
def test_the_search_benchmark_prints_its_figures_at_a_tiny_size() -> None:
    run = subprocess.run([sys.executable, "bench/search_latency.py", *TINY], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout[-2000:]
    figures = json.loads(lines[0])

    assert figures["benchmark"] == "search_latency"
    assert set(figures["stages"]) == {"120_rows", "240_rows"}
    for name, stage in figures["stages"].items():
        assert set(stage["uncached"]["at_server"]) == LATENCY, name
        for part in ("at_client", "query_embedding", "database_nearest", "rest_of_request"):
            assert stage["uncached"][part]["n"] == 8, (name, part)
        assert set(stage["cached"]["at_server"]) == LATENCY
        (throughput,) = stage["cached_throughput"]
        assert throughput["connections"] == 2 and throughput["not_200"] == 0
        assert throughput["cached"] == throughput["requests"] > 0
        assert throughput["per_second"] > 0 and throughput["server_cpu_seconds"] > 0
        assert stage["prewarm"]["queries"] >= 6  # the common queries and the top ones
        assert stage["prewarm"]["until_all_keys_in_redis"]["n"] == 1
        assert stage["prewarm"]["prewarm_login_at_server"]["n"] == 1
    first = figures["stages"]["240_rows"]["uncached_first_search_of_each_yacht"]
    assert first["signature_reads"]["n"] == 2

    compared = figures["exact_vs_hnsw"]
    assert set(compared["exact"]["latency"]) == LATENCY
    assert compared["hnsw_index"]["build_seconds"] >= 0 and compared["hnsw_index"]["size_mb"] >= 0
    # The product's query stays an exact scan beside an HNSW index.
    assert "Limit > Sort" in compared["product_query_plan_with_hnsw_present"]
    assert "bench_hnsw" not in compared["product_query_plan_with_hnsw_present"]
    for variant in ("iterative_scan_off", "relaxed_order_ef_search_40"):
        assert 0 <= compared[variant]["recall_at_20"] <= 1, variant
        assert "bench_hnsw" in compared[variant]["plan"], variant
    for what_if in compared["exact_what_ifs"].values():
        assert what_if["same_results"] == "4/4"
    assert set(figures["targets"]) == {"cached_p99_ms_at_server", "uncached_p99_ms_at_server",
                                       "cached_searches_per_second"}
    assert all(isinstance(t["met"], bool) for t in figures["targets"].values())
