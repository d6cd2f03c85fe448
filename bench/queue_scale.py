"""The worker's rows/s as the fleet's queue grows: one yacht drained with 10,000 rows
queued in all, then with 670,000.

The real worker (`f1backfill worker`, a child process) drains one yacht of `--rows` rows
(the fleet's texts, 200-3,000 chars, 5% up to 24,000) against the fake provider at latency 0
and limits nobody reaches (the `unlimited` scenario of `worker_throughput.py`), so what it
measures is the worker and the database. At each size the other 133 yachts of a 134-yacht
fleet hold the rest of the queue: their rows made in SQL and queued in bulk, as
`claim_cost.py` does, then the tables vacuumed and analysed, as autovacuum would have done
before the Job starts. The yacht's own rows are pending: the worker queues them itself, as
in a Job. Each size has a database of its own on one PostgreSQL server.

Each size is run `--runs` times (5), alternating between sizes so that a busy minute on
the machine hits both; between runs the yacht is put back as it was (rows pending, its jobs
deleted, tables vacuumed). rows/s is counted from the first claim to the last
acknowledgement (`embedding_jobs`), and also from the worker's start to its exit (what a Job
takes: its start-up queries and its last look at the queue included); the medians of the
runs are compared. While the worker runs, once a quarter of its rows are embedded, the
claim's `EXPLAIN (ANALYZE, BUFFERS)` is taken from another connection and rolled back (it
holds 100 rows for a few milliseconds; the worker skips them); after the run instead, when
the run was too short to catch.

Prints ONE JSON line on stdout (rows/s at each size, the ratio of the largest to the
smallest, target >= 0.9); progress and the plans on stderr.

    PYTHONPATH=. .venv/bin/python bench/queue_scale.py [--sizes 10000,670000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` and `tests.support` live at the repository root
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench.claim_cost import ENQUEUE_MANY, INSERT_ROWS, spread  # noqa: E402
from bench.worker_throughput import (  # noqa: E402
    DIMENSIONS,
    FLEET_TEXTS,
    HUGE_RPM,
    HUGE_TPM,
    Scenario,
    db_figures,
    fake_stats,
    start_fake,
    start_worker,
    stop,
    wait_worker,
)
from f1backfill.db import query  # noqa: E402
from f1backfill.db.migrate import migrate  # noqa: E402
from f1sandbox.localdb import LocalPostgres  # noqa: E402
from f1sandbox.samples import add_rows, add_yacht  # noqa: E402

TARGET_RATIO = 0.9
UNLIMITED = Scenario("unlimited", 0.0, HUGE_RPM, HUGE_TPM, 60.0, FLEET_TEXTS, 0, False)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load(url: str, size: int, rows: int, yachts: int, seed: int) -> tuple[str, dict]:
    """The measured yacht's `rows` pending rows and `size - rows` queued rows of the others."""
    rng = random.Random(seed)
    others = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(yachts - 1)]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO yachts (id, name) SELECT id, 'Other ' || n "
                        "FROM unnest(%s::uuid[]) WITH ORDINALITY AS y (id, n)", (others,))
            counts = spread(max(0, size - rows), len(others))
            cur.execute(INSERT_ROWS, {"ids": others, "firsts": [1] * len(others),
                                      "lasts": counts})
            cur.execute(ENQUEUE_MANY, {"ids": others})
        yacht = add_yacht(conn, "Measured")
        t = FLEET_TEXTS
        add_rows(conn, yacht.id, rows, seed=seed, min_chars=t.min_chars, max_chars=t.max_chars,
                 long_share=t.long_share, long_chars=t.long_chars)
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE search_index")
            cur.execute("VACUUM ANALYZE embedding_jobs")
            cur.execute("SELECT count(*) FROM embedding_jobs WHERE status = 'queued'")
            queued = cur.fetchone()[0]
            cur.execute("SELECT pg_total_relation_size('search_index'), "
                        "pg_total_relation_size('embedding_jobs'), "
                        "pg_relation_size('embedding_jobs_claim')")
            index_bytes = cur.fetchone()
    finally:
        conn.close()
    return str(yacht.id), {"others_queued": queued, "queued_with_the_yachts": queued + rows,
                           "load_seconds": round(time.monotonic() - started, 1),
                           "search_index_bytes": index_bytes[0],
                           "embedding_jobs_bytes": index_bytes[1],
                           "claim_index_bytes": index_bytes[2]}


class PlanTaker:
    """Takes the claim's EXPLAIN (ANALYZE, BUFFERS) once `at` rows of the yacht are done (or,
    for a run too short to catch, after it: `when` says which)."""

    def __init__(self, url: str, yacht: str, at: int, fake_url: str) -> None:
        self.url, self.yacht, self.at, self.fake_url = url, yacht, at, fake_url
        self.plan = ""
        self.when = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plan", daemon=True)

    def __enter__(self) -> PlanTaker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if not self.plan:
            self._explain("after the run")

    def _explain(self, when: str) -> None:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query("claim_batch"), {
                    "yacht_id": self.yacht, "worker": "bench-explain",
                    "lease_seconds": 300.0, "limit": 100})
                self.plan = "\n".join(row[0] for row in cur.fetchall())
                self.when = when
            conn.rollback()
        finally:
            conn.close()

    def _run(self) -> None:
        # Progress from the fake's count of rows served, not from the database being
        # measured: a count there was a query on the worker's tables every poll.
        while not self._stop.wait(0.1):
            try:
                done = fake_stats(self.fake_url)["inputs_served"]
            except OSError:
                continue
            if done >= self.at:
                self._explain(f"with {done:,} rows of the yacht served")
                return


def prepare(server: LocalPostgres, size: int, args: argparse.Namespace) -> tuple[str, str, dict]:
    log(f"== loading {size:,} rows queued in all ({args.rows:,} of them the measured "
        "yacht's)")
    url = server.create_database(f"queue_scale_{size}")
    migrate(url, dimensions=DIMENSIONS)
    yacht, loaded = load(url, size, args.rows, args.yachts, args.seed)
    log(f"  loaded in {loaded['load_seconds']}s: {loaded['others_queued']:,} queued rows of "
        f"other yachts")
    return url, yacht, loaded


def reset(url: str, yacht: str) -> None:
    """The yacht as before its first run: rows pending without a vector, no job of its own
    (the other yachts' queue is untouched), vacuumed and analysed."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM embedding_jobs WHERE yacht_id = %s", (yacht,))
            cur.execute("UPDATE search_index SET embedding = NULL, embedding_status = 'pending',"
                        " embedding_model = NULL, embedding_provider = NULL, embedded_at = NULL"
                        " WHERE yacht_id = %s", (yacht,))
            cur.execute("VACUUM ANALYZE search_index")
            cur.execute("VACUUM ANALYZE embedding_jobs")
    finally:
        conn.close()


def run_once(url: str, yacht: str, size: int, args: argparse.Namespace, workdir: Path,
             run: int) -> dict:
    fake, base_url = start_fake(UNLIMITED, workdir / f"{size}.{run}.fake.log")
    worker_log = workdir / f"{size}.{run}.worker.log"
    try:
        started = time.monotonic()
        with PlanTaker(url, yacht, args.rows // 4, base_url) as planner:
            worker = start_worker(UNLIMITED, url, yacht, base_url, args, worker_log)
            code, _usage, hwm, timed_out = wait_worker(worker, started + args.timeout,
                                                       base_url, [])
        wall = time.monotonic() - started
    finally:
        stop(fake)
    figures = db_figures(url, yacht)
    embedded = figures["statuses"].get("embedded", 0)
    seconds = figures["first_claim_to_last_ack_s"]
    if code != 0:
        log(f"  worker exited {code}:\n" + "\n".join(
            worker_log.read_text(errors="replace").splitlines()[-20:]))
    result = {"rows_embedded": embedded, "exit_code": code, "timed_out": timed_out,
              "wall_seconds": round(wall, 2),
              "first_claim_to_last_ack_seconds": round(seconds, 2),
              "rows_per_second": round(embedded / seconds, 1) if seconds else None,
              "rows_per_second_wall": round(embedded / wall, 1) if wall else None,
              "worker_peak_rss_mib": round(hwm / 1024, 1),
              "claim_plan": planner.plan, "claim_plan_taken": planner.when}
    log(f"  {size:,} queued, run {run + 1}: {embedded:,} rows in {seconds:.2f}s (claim to "
        f"ack): {result['rows_per_second']} rows/s; {result['rows_per_second_wall']} rows/s "
        "from start to exit")
    return result


def summary(loaded: dict, runs: list[dict]) -> dict:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 1) if values else None

    return {**loaded, "runs": [{k: v for k, v in r.items() if not k.startswith("claim_plan")}
                               for r in runs],
            "rows_per_second": median("rows_per_second"),
            "rows_per_second_wall": median("rows_per_second_wall"),
            "claim_plan": runs[0]["claim_plan"], "claim_plan_taken": runs[0]["claim_plan_taken"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,670000",
                        help="rows queued in all, the yacht's included (comma-separated)")
    parser.add_argument("--rows", type=int, default=10000, help="the measured yacht's rows")
    parser.add_argument("--yachts", type=int, default=134, help="yachts in the fleet")
    parser.add_argument("--max-in-flight", type=int, default=4, help="MAX_IN_FLIGHT")
    parser.add_argument("--batch-sleep", type=float, default=0.0, help="BATCH_SLEEP_SEC")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs at each size, alternating; the median is compared")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    began = time.monotonic()
    results = {}
    server = LocalPostgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="f1-queue-scale-") as tmp:
            prepared = {size: prepare(server, size, args) for size in sizes}
            runs: dict[int, list[dict]] = {size: [] for size in sizes}
            for run in range(args.runs):  # alternating, so that a busy minute hits both
                for size in sizes:
                    url, yacht, _ = prepared[size]
                    if run:
                        reset(url, yacht)
                    runs[size].append(run_once(url, yacht, size, args, Path(tmp), run))
            for size in sizes:
                results[str(size)] = summary(prepared[size][2], runs[size])
                print(f"-- EXPLAIN (ANALYZE, BUFFERS) claim_batch at {size:,} queued rows, "
                      f"{results[str(size)]['claim_plan_taken']}:\n"
                      f"{results[str(size)]['claim_plan']}",
                      file=sys.stderr, flush=True)
    finally:
        server.stop()
    first, last = results[str(sizes[0])], results[str(sizes[-1])]

    def ratio_of(key: str) -> float | None:
        return (round(last[key] / first[key], 3) if first[key] and last[key] else None)

    ratio = ratio_of("rows_per_second")
    complete = all(r["rows_embedded"] == args.rows and r["exit_code"] == 0
                   for result in results.values() for r in result["runs"])
    print(json.dumps({
        "benchmark": "queue_scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_average": os.getloadavg()},
        "settings": {"rows": args.rows, "yachts": args.yachts, "runs": args.runs,
                     "max_in_flight": args.max_in_flight, "batch_size": 100,
                     "dimensions": DIMENSIONS},
        "sizes": results,
        "ratio_largest_over_smallest": ratio,
        "ratio_largest_over_smallest_wall": ratio_of("rows_per_second_wall"),
        "targets": {"ratio": {"value": ratio, "target": TARGET_RATIO, "op": ">=",
                              "met": ratio is not None and ratio >= TARGET_RATIO},
                    "all_rows_embedded": {"value": complete, "target": True, "op": "==",
                                          "met": complete}},
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
