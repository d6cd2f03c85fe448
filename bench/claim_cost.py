"""What one 100-row batch costs the database as the fleet's queue grows.

A fleet of 134 yachts is loaded in stages until 670,000 rows are queued (5,000 per yacht).
At each stage (67,000, 335,000 and 670,000 queued rows by default) a yacht in the middle
of the fleet (the median yacht id) holds 5,000 freshly queued rows, queued by the worker's
own `Queue.enqueue_pending`, and 50 batches are taken the worker's way: `Queue.claim(100)`
then `Queue.complete` with 1,536-dimension vectors, timed separately and together.

The other yachts' rows are made in SQL (`generate_series`, short texts) and queued by the
same SQL as `enqueue_pending`, in bulk, so loading takes seconds, not minutes. After each
load the tables are vacuumed and analysed, as autovacuum would do on a real server; the
dead index entries the measured batches leave behind are not cleaned, as in production.

Prints ONE JSON line on stdout; progress and the claim's EXPLAIN (ANALYZE, BUFFERS) on
stderr.

    PYTHONPATH=. .venv/bin/python bench/claim_cost.py [--sizes 67000,335000,670000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import psycopg2

from f1backfill.db import query
from f1backfill.db.migrate import migrate
from f1backfill.worker.queue import Queue, copy_vectors_payload
from f1sandbox.localdb import LocalPostgres

DIMENSIONS = 1536
MODEL = "text-embedding-3-small"
TARGET_BATCH_MS = 20.0
# "Flat": the largest queue's median batch may cost this much more than the smallest's.
TARGET_FLATNESS = 1.25

INSERT_ROWS = """
INSERT INTO search_index (object_type, object_id, yacht_id, search_text)
SELECT (ARRAY['work_order', 'equipment', 'document', 'email', 'certificate'])[1 + g %% 5],
       gen_random_uuid(), y.id,
       'work order ' || g || ' engine oil filter racor watermaker service interval ' || y.id
FROM unnest(%(ids)s::uuid[], %(firsts)s::int[], %(lasts)s::int[]) AS y (id, lo, hi),
     generate_series(y.lo, y.hi) AS g
"""

# enqueue_pending for many yachts at once (same effect: rows 'queued', one job each).
ENQUEUE_MANY = """
WITH marked AS (
    UPDATE search_index
    SET embedding_status = 'queued', embedding_queued_at = now()
    WHERE yacht_id = ANY (%(ids)s::uuid[]) AND embedding_status = 'pending'
    RETURNING object_type, object_id, yacht_id
)
INSERT INTO embedding_jobs (object_type, object_id, yacht_id, priority)
SELECT object_type, object_id, yacht_id, 0 FROM marked
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if n < extra else 0) for n in range(parts)]


def unit_vectors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    vectors = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return list(vectors)


def figures(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
            "max_ms": round(max(values), 2)}


class Fleet:
    def __init__(self, url: str, yachts: int, per_yacht: int, seed: int) -> None:
        self.url = url
        self.per_yacht = per_yacht
        rng = random.Random(seed)
        ids = sorted(uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(yachts))
        self.measured = ids[len(ids) // 2]
        self.others = [y for y in ids if y != self.measured]
        self.loaded = dict.fromkeys(self.others, 0)
        self.measured_loaded = False
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO yachts (id, name) SELECT id, 'Bench ' || n "
                        "FROM unnest(%s::uuid[]) WITH ORDINALITY AS y (id, n)", (ids,))

    def grow_to(self, queued: int) -> dict:
        """Queue rows until `queued` are waiting: the measured yacht's 5,000, the rest spread."""
        started = time.monotonic()
        wanted = spread(queued - self.per_yacht, len(self.others))
        ids, firsts, lasts = [], [], []
        for yacht, count in zip(self.others, wanted, strict=True):
            have = self.loaded[yacht]
            if count > have:
                ids.append(yacht)
                firsts.append(have + 1)
                lasts.append(count)
                self.loaded[yacht] = count
        with self.conn.cursor() as cur:
            if ids:
                cur.execute(INSERT_ROWS, {"ids": ids, "firsts": firsts, "lasts": lasts})
                cur.execute(ENQUEUE_MANY, {"ids": ids})
            if self.measured_loaded:
                # The rows the last stage embedded are queued again (a re-embed), leaving
                # their done jobs behind as history.
                cur.execute("UPDATE search_index SET embedding_status = 'pending' "
                            "WHERE yacht_id = %s AND embedding_status = 'embedded'",
                            (self.measured,))
            else:
                cur.execute(INSERT_ROWS, {"ids": [self.measured], "firsts": [1],
                                          "lasts": [self.per_yacht]})
                self.measured_loaded = True
        loaded = time.monotonic() - started
        queue = Queue(self.url, str(self.measured), "bench-enqueue", 300.0)
        try:
            began = time.perf_counter()
            enqueued = queue.enqueue_pending()
            enqueue_ms = (time.perf_counter() - began) * 1000
        finally:
            queue.close()
        with self.conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE search_index")
            cur.execute("VACUUM ANALYZE embedding_jobs")
            cur.execute("SELECT count(*) FILTER (WHERE status = 'queued'), count(*) "
                        "FROM embedding_jobs")
            waiting, jobs = cur.fetchone()
        log(f"queue at {waiting:,} rows ({jobs:,} jobs in all), loaded in {loaded:.1f}s; "
            f"the measured yacht's {enqueued:,} rows queued by enqueue_pending in "
            f"{enqueue_ms:.0f} ms")
        return {"queued_rows": waiting, "jobs_in_table": jobs,
                "measured_yacht_enqueued": enqueued,
                "enqueue_pending_5000_ms": round(enqueue_ms, 1),
                "load_seconds": round(loaded, 1)}

    def explain_claim(self, batch: int) -> str:
        """The claim's plan with real execution, rolled back so nothing is claimed."""
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query("claim_batch"), {
                    "yacht_id": self.measured, "worker": "bench-explain",
                    "lease_seconds": 300.0, "limit": batch})
                plan = "\n".join(row[0] for row in cur.fetchall())
            conn.rollback()
        finally:
            conn.close()
        return plan

    def close(self) -> None:
        self.conn.close()


def measure(fleet: Fleet, batches: int, batch: int, vectors: list[np.ndarray]) -> dict:
    queue = Queue(fleet.url, str(fleet.measured), "bench-claim", 300.0)
    claim_ms, ack_ms, total_ms, text_ms = [], [], [], []
    try:
        for _ in range(batches):
            began = time.perf_counter()
            rows = queue.claim(batch)
            claimed = time.perf_counter()
            if len(rows) != batch:
                raise RuntimeError(f"claimed {len(rows)} rows, expected {batch}")
            done = list(zip(rows, vectors, strict=False))
            acked_from = time.perf_counter()
            embedded = queue.complete(done, [], [], MODEL, provider="hash")
            acked = time.perf_counter()
            if embedded != batch:
                raise RuntimeError(f"acknowledged {embedded} rows, expected {batch}")
            # The Python share of the ack: encoding the vectors for the binary COPY
            # (repeated here, outside the timed section, to attribute it).
            texts_from = time.perf_counter()
            copy_vectors_payload(done)
            text_ms.append((time.perf_counter() - texts_from) * 1000)
            claim_ms.append((claimed - began) * 1000)
            ack_ms.append((acked - acked_from) * 1000)
            total_ms.append((claimed - began + acked - acked_from) * 1000)
    finally:
        queue.close()
    ack_db_ms = [a - t for a, t in zip(ack_ms, text_ms, strict=True)]
    return {"batches": batches, "batch_size": batch,
            "claim_plus_ack": figures(total_ms), "claim": figures(claim_ms),
            "ack": figures(ack_ms), "ack_vector_encoding_in_python": figures(text_ms),
            "ack_without_vector_encoding": figures(ack_db_ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="67000,335000,670000",
                        help="queued rows at which to measure (comma-separated, increasing)")
    parser.add_argument("--yachts", type=int, default=134)
    parser.add_argument("--per-yacht", type=int, default=5000,
                        help="rows of the measured yacht (and of every yacht at the end)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batches * args.batch_size > args.per_yacht:
        parser.error("--batches x --batch-size must fit in --per-yacht")

    began = time.monotonic()
    vectors = unit_vectors(args.batch_size)
    results = {}
    server = LocalPostgres.start()
    try:
        url = server.create_database("bench_claim")
        migrate(url, dimensions=DIMENSIONS)
        fleet = Fleet(url, args.yachts, args.per_yacht, args.seed)
        try:
            for size in sizes:
                log(f"== growing the queue to {size:,} rows")
                stage = fleet.grow_to(size)
                plan = fleet.explain_claim(args.batch_size)
                print(f"-- EXPLAIN (ANALYZE, BUFFERS) claim_batch at {size:,} queued rows:\n"
                      f"{plan}", file=sys.stderr, flush=True)
                stage["claim_uses_partial_index"] = "embedding_jobs_claim" in plan
                stage.update(measure(fleet, args.batches, args.batch_size, vectors))
                log(f"  claim+ack median {stage['claim_plus_ack']['median_ms']} ms, "
                    f"p95 {stage['claim_plus_ack']['p95_ms']} ms; claim alone median "
                    f"{stage['claim']['median_ms']} ms; vector text "
                    f"{stage['ack_vector_encoding_in_python']['median_ms']} ms")
                results[str(size)] = stage
        finally:
            fleet.close()
    finally:
        server.stop()

    first, last = results[str(sizes[0])], results[str(sizes[-1])]
    flatness = {
        key: round(last[key]["median_ms"] / first[key]["median_ms"], 2)
        for key in ("claim_plus_ack", "claim", "ack")
    }
    targets = {
        "claim_plus_ack_median_ms": {
            "value": max(r["claim_plus_ack"]["median_ms"] for r in results.values()),
            "target": TARGET_BATCH_MS, "op": "<="},
        "claim_plus_ack_p95_ms": {
            "value": max(r["claim_plus_ack"]["p95_ms"] for r in results.values()),
            "target": TARGET_BATCH_MS, "op": "<="},
        "flatness_claim_plus_ack": {"value": flatness["claim_plus_ack"],
                                    "target": TARGET_FLATNESS, "op": "<="},
        "claim_uses_partial_index": {
            "value": all(r["claim_uses_partial_index"] for r in results.values()),
            "target": True, "op": "=="},
    }
    for check in targets.values():
        value, target = check["value"], check["target"]
        check["met"] = value == target if check["op"] == "==" else value <= target
    print(json.dumps({
        "benchmark": "claim_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"yachts": args.yachts, "per_yacht": args.per_yacht,
                     "batches": args.batches, "batch_size": args.batch_size,
                     "dimensions": DIMENSIONS},
        "sizes": results,
        "flatness_largest_over_smallest": flatness,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
