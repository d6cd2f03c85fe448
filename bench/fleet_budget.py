"""One provider account for the whole fleet: Jobs back to back and Jobs side by side.

The fake OpenAI provider (`python -m f1sandbox.fake_openai --start-empty`, a child process)
starts **spent**, as the account is when the previous Job has just used it, and so does the
account's shared bucket in Postgres (the row the previous Job's worker left; the script
creates it when it starts the fake). Real worker processes (`f1backfill worker`) then drain
yachts of unequal sizes from one throwaway PostgreSQL 18 + pgvector, every worker with the
account's whole budget, as the operator now gives each Job:

  fleet-20ms / fleet-150ms    --fleet-yachts (12) yachts back to back, one worker at a time,
                              each started as soon as the previous one exits (the operator's
                              own admission gap is measured elsewhere), smallest first as the
                              operator admits them
  shared-20ms / shared-150ms  --shared-yachts (6) yachts, at most --max-concurrent-jobs (3)
                              workers at once; when one exits the next starts

at Tier 1 (1,000,000 TPM, 3,000 RPM, 60 s burst) and 20 or 150 ms latency. Figures: the
fraction of the TPM ceiling over the whole run (first request to last response, the gaps
between Jobs included; the ceiling is what the bucket held at the first request plus the
refill), the share of requests answered 429 (cold starts included), requests per row, the
workers' peak RSS, the gaps between Jobs, and what one shared-bucket statement costs.

Prints ONE JSON line (figures and targets, with pass/fail) on stdout; progress on stderr.

    PYTHONPATH=. .venv/bin/python bench/fleet_budget.py [--scenario NAME ...] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import psycopg2  # noqa: E402
import worker_throughput as wt  # noqa: E402  (its process and /proc helpers)

from f1backfill.db.migrate import migrate  # noqa: E402
from f1backfill.worker.ratelimit import Reservation, SharedBucket, account_id  # noqa: E402
from f1sandbox.localdb import LocalPostgres  # noqa: E402
from f1sandbox.samples import add_rows, add_yacht  # noqa: E402

DIMENSIONS = 1536
BATCH_SIZE = 100
API_KEY = "sk-bench-fleet"
MODEL = "text-embedding-3-small"
# Unequal sizes (rows), in no order; scaled by --scale. Fleet: ~93 s at Tier 1; shared: ~80 s.
FLEET_SIZES = (900, 150, 600, 320, 1200, 80, 450, 700, 210, 1000, 520, 60)
SHARED_SIZES = (1500, 300, 800, 1200, 200, 700)

TARGETS = {
    "utilisation_min": 0.99,
    "rate_limited_share_max": 0.01,
    "requests_per_row_max": 0.02,
    "worker_rss_mib_max": 120.0,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: float
    concurrent: int  # workers at once: 1 = back to back
    sizes: tuple[int, ...]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    def sized(sizes: tuple[int, ...], count: int) -> tuple[int, ...]:
        chosen = (sizes * (count // len(sizes) + 1))[:count]
        return tuple(max(1, round(n * args.scale)) for n in chosen)

    fleet = sized(FLEET_SIZES, args.fleet_yachts)
    shared = sized(SHARED_SIZES, args.shared_yachts)
    return {
        "fleet-20ms": Scenario("fleet-20ms", 20.0, 1, fleet),
        "fleet-150ms": Scenario("fleet-150ms", 150.0, 1, fleet),
        "shared-20ms": Scenario("shared-20ms", 20.0, args.max_concurrent_jobs, shared),
        "shared-150ms": Scenario("shared-150ms", 150.0, args.max_concurrent_jobs, shared),
    }


def start_fake(scenario: Scenario, args: argparse.Namespace, log_path: Path
               ) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "f1sandbox.fake_openai", "--port", "0", "--start-empty",
               "--rpm", str(args.rpm), "--tpm", str(args.tpm), "--burst-seconds", "60",
               "--latency-ms", str(scenario.latency_ms), "--dimensions", str(DIMENSIONS)]
    with open(log_path, "ab") as errors:
        fake = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=errors)
    line = fake.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake provider did not start; see {log_path}")
    return fake, json.loads(line)["base_url"]


def start_worker(database_url: str, yacht_id: str, base_url: str, args: argparse.Namespace,
                 log_path: Path, name: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url, "YACHT_ID": yacht_id, "WORKER_NAME": name,
        "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": API_KEY, "EMBEDDING_MODEL": MODEL,
        "OPENAI_BASE_URL": base_url, "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
        # What the operator gives every Job now: the account's whole budget, and the
        # account's limits for the shared bucket.
        "RATE_LIMIT_RPM": str(args.rpm), "RATE_LIMIT_TPM": str(args.tpm),
        "ACCOUNT_RATE_LIMIT_RPM": str(args.rpm), "ACCOUNT_RATE_LIMIT_TPM": str(args.tpm),
        "BATCH_SIZE": str(BATCH_SIZE), "BATCH_SLEEP_SEC": str(args.batch_sleep),
        "MAX_IN_FLIGHT": str(args.max_in_flight), "PROMETHEUS_PORT": "0",
        "LOG_LEVEL": args.worker_log_level,
    }
    with open(log_path, "ab") as output:
        return subprocess.Popen(wt.worker_command(), cwd=ROOT, env=env, stdout=output,
                                stderr=subprocess.STDOUT)


@dataclass
class Running:
    process: subprocess.Popen
    yacht: str
    rows: int
    started: float
    hwm_kib: int = 0
    exit_code: int | None = None
    ended: float = 0.0


def run_jobs(yachts: list[tuple[str, int]], scenario: Scenario, database_url: str,
             base_url: str, args: argparse.Namespace, workdir: Path) -> list[Running]:
    """The operator's part, minus the cluster: at most `concurrent` workers; when one exits
    the next yacht's starts at once. Polls every 20 ms (exits, RSS high-water marks)."""
    waiting = list(yachts)
    running: list[Running] = []
    done: list[Running] = []
    deadline = time.monotonic() + args.timeout
    next_progress = time.monotonic() + 10
    while waiting or running:
        while waiting and len(running) < scenario.concurrent:
            yacht, rows = waiting.pop(0)
            name = f"bench-{len(done) + len(running)}"
            process = start_worker(database_url, yacht, base_url, args,
                                   workdir / f"{scenario.name}.{name}.log", name)
            running.append(Running(process, yacht, rows, time.monotonic()))
        for job in list(running):
            job.hwm_kib = max(job.hwm_kib, wt.vm_hwm_kib(job.process.pid) or 0)
            pid, status, _ = os.wait4(job.process.pid, os.WNOHANG)
            if pid:
                job.exit_code = os.waitstatus_to_exitcode(status)
                job.process.returncode = job.exit_code
                job.ended = time.monotonic()
                running.remove(job)
                done.append(job)
                if job.exit_code != 0:
                    log(f"  worker for {job.yacht} exited {job.exit_code}")
        now = time.monotonic()
        if now > deadline:
            log("  deadline passed: stopping the workers")
            for job in running:
                wt.stop(job.process)
                job.exit_code, job.ended = job.process.returncode, now
            done.extend(running)
            break
        if now >= next_progress:
            try:
                stats = wt.fake_stats(base_url)
                log(f"  {len(done)}/{len(yachts)} Jobs done: {stats['inputs_served']} rows "
                    f"served, {stats['requests']} requests, {stats['rate_limited']} x 429")
            except OSError:
                pass
            next_progress = now + 10
        time.sleep(0.02)
    return done


def job_gaps(database_url: str, order: list[str]) -> list[float]:
    """Back to back: seconds from one yacht's last acknowledgement to the next yacht's first
    claim (worker exit, the next worker's start-up, its enqueue)."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT yacht_id::text, min(started_at), max(finished_at) "
                        "FROM embedding_jobs GROUP BY 1")
            spans = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
    finally:
        conn.close()
    gaps = []
    for before, after in itertools.pairwise(order):
        if before in spans and after in spans:
            gaps.append((spans[after][0] - spans[before][1]).total_seconds())
    return gaps


def statement_cost(database_url: str, count: int) -> dict:
    """What one shared-bucket statement costs a worker: `count` reservations and settlements
    on a scratch account with budget to spare (so nothing waits), timed one by one."""
    shared = SharedBucket(database_url, account_id("sk-bench-cost", MODEL), 10**9, 10**12)
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:  # a full scratch bucket
            cur.execute("UPDATE provider_budget SET requests = 1e9, tokens = 1e12 "
                        "WHERE account = %s", (shared.account,))
        conn.close()
        reserve, settle = [], []
        for _ in range(count):
            reservation = Reservation(1000)
            started = time.perf_counter()
            shared.reserve(reservation, None)
            reserve.append(time.perf_counter() - started)
            started = time.perf_counter()
            shared.settle(reservation, 900, {})
            settle.append(time.perf_counter() - started)
    finally:
        shared.close()

    def ms(values: list[float]) -> dict:
        values = sorted(values)
        return {"median": round(1000 * statistics.median(values), 3),
                "p99": round(1000 * values[int(0.99 * (len(values) - 1))], 3)}

    return {"statements": count, "reserve_ms": ms(reserve), "settle_ms": ms(settle)}


def run_scenario(server: LocalPostgres, scenario: Scenario, args: argparse.Namespace,
                 workdir: Path) -> dict:
    log(f"== {scenario.name}: latency {scenario.latency_ms:g} ms, RPM {args.rpm:,}, TPM "
        f"{args.tpm:,}, {len(scenario.sizes)} yachts ({sum(scenario.sizes):,} rows), "
        f"{scenario.concurrent} at a time")
    database_url = server.create_database("bench_" + scenario.name.replace("-", "_"))
    migrate(database_url, dimensions=DIMENSIONS)
    conn = psycopg2.connect(database_url)
    try:
        yachts = []
        for n, rows in enumerate(scenario.sizes):
            yacht = add_yacht(conn, f"Bench {scenario.name} {n}")
            t = wt.FLEET_TEXTS
            add_rows(conn, yacht.id, rows, seed=args.seed + n, min_chars=t.min_chars,
                     max_chars=t.max_chars, long_share=t.long_share, long_chars=t.long_chars)
            yachts.append((str(yacht.id), rows))
    finally:
        conn.close()
    # The operator admits the smallest pending yacht first among equal priorities.
    yachts.sort(key=lambda item: item[1])
    load = {"before": [round(x, 2) for x in os.getloadavg()]}
    fake, base_url = start_fake(scenario, args, workdir / f"{scenario.name}.fake.log")
    try:
        # The previous Job's worker left the account's row as spent as the provider is.
        SharedBucket(database_url, account_id(API_KEY, MODEL), args.rpm, args.tpm).close()
        started = time.monotonic()
        jobs = run_jobs(yachts, scenario, database_url, base_url, args, workdir)
        wall = time.monotonic() - started
        stats = wt.fake_stats(base_url)
    finally:
        wt.stop(fake)
    load["after"] = [round(x, 2) for x in os.getloadavg()]
    embedded = sum(wt.db_figures(database_url, yacht)["statuses"].get("embedded", 0)
                   for yacht, _ in yachts)
    rows = sum(scenario.sizes)
    requests = stats["requests"]
    gaps = job_gaps(database_url, [job.yacht for job in sorted(jobs, key=lambda j: j.started)])
    result = {
        "yachts": len(yachts),
        "sizes": sorted(scenario.sizes),
        "concurrent_jobs": scenario.concurrent,
        "rows": rows,
        "rows_embedded": embedded,
        "exit_codes": sorted({job.exit_code for job in jobs}, key=str),
        "latency_ms": scenario.latency_ms,
        "limits": {"rpm": args.rpm, "tpm": args.tpm, "burst_seconds": 60.0,
                   "start_empty": stats["start_empty"]},
        "wall_seconds": round(wall, 2),
        "provider_window_seconds": round(stats["elapsed_seconds"], 2),
        "tokens_at_first_request": round(stats["tokens_at_first_request"] or 0),
        "tokens_served": stats["tokens_served"],
        "allowed_tokens": round(stats["allowed_tokens"]),
        "ceiling_utilisation": round(stats["tokens_served"] / stats["allowed_tokens"], 4)
        if stats["allowed_tokens"] else None,
        "requests": requests,
        "by_status": stats["by_status"],
        "rate_limited": stats["rate_limited"],
        "rate_limited_share": round(stats["rate_limited"] / requests, 4) if requests else None,
        "requests_per_row": round(requests / embedded, 4) if embedded else None,
        "worker_peak_rss_mib": round(max(job.hwm_kib for job in jobs) / 1024, 1),
        "job_seconds": [round(job.ended - job.started, 2)
                        for job in sorted(jobs, key=lambda j: j.started)],
        "load_average": load,
    }
    if scenario.concurrent == 1:
        result["gaps_seconds"] = {
            "between_jobs": len(gaps),
            "median": round(statistics.median(gaps), 3) if gaps else None,
            "max": round(max(gaps), 3) if gaps else None,
            "total": round(sum(gaps), 2)}
    result["targets"] = targets_for(result)
    log(f"  done: {embedded:,} rows in {wall:.1f}s, utilisation "
        f"{result['ceiling_utilisation']}, {stats['rate_limited']} x 429 of {requests}, "
        f"{result['requests_per_row']} requests/row, RSS {result['worker_peak_rss_mib']} MiB, "
        f"load {load['after']}")
    return result


def targets_for(r: dict) -> dict:
    ok = r["exit_codes"] == [0] and r["rows_embedded"] == r["rows"]
    return {
        "all_rows_embedded": {"value": r["rows_embedded"], "target": r["rows"], "op": "==",
                              "met": ok},
        "ceiling_utilisation": wt.check(r["ceiling_utilisation"], TARGETS["utilisation_min"],
                                        True),
        "rate_limited_share": wt.check(r["rate_limited_share"],
                                       TARGETS["rate_limited_share_max"], False),
        "requests_per_row": wt.check(r["requests_per_row"], TARGETS["requests_per_row_max"],
                                     False),
        "worker_peak_rss_mib": wt.check(r["worker_peak_rss_mib"],
                                        TARGETS["worker_rss_mib_max"], False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append",
                        choices=["fleet-20ms", "fleet-150ms", "shared-20ms", "shared-150ms"],
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--rpm", type=int, default=3000, help="the account's RPM (Tier 1)")
    parser.add_argument("--tpm", type=int, default=1_000_000, help="the account's TPM (Tier 1)")
    parser.add_argument("--fleet-yachts", type=int, default=12,
                        help="yachts of the fleet scenarios (at least 10 for the issue)")
    parser.add_argument("--shared-yachts", type=int, default=6,
                        help="yachts of the shared scenarios")
    parser.add_argument("--max-concurrent-jobs", type=int, default=3,
                        help="shared scenarios: workers at once (MAX_CONCURRENT_JOBS)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every yacht's rows (a tiny run: 0.02)")
    parser.add_argument("--max-in-flight", type=int, default=4, help="MAX_IN_FLIGHT")
    parser.add_argument("--batch-sleep", type=float, default=0.0, help="BATCH_SLEEP_SEC")
    parser.add_argument("--statement-samples", type=int, default=2000,
                        help="shared-bucket statements timed (0: skip)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before a scenario's workers are stopped")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker-log-level", default="INFO", help="LOG_LEVEL of the workers")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="write the workers' and the fake's logs here (default: a "
                        "temporary directory, deleted)")
    args = parser.parse_args(argv)

    chosen = scenarios(args)
    names = args.scenario or list(chosen)
    began = time.monotonic()
    results: dict = {}
    cost = None
    server = LocalPostgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="f1-bench-fleet-") as tmp:
            logs = Path(args.keep_logs or tmp)
            logs.mkdir(parents=True, exist_ok=True)
            for name in names:
                results[name] = run_scenario(server, chosen[name], args, logs)
        if args.statement_samples:
            url = server.create_database("bench_budget_statements")
            migrate(url, dimensions=DIMENSIONS)
            cost = statement_cost(url, args.statement_samples)
            log(f"  shared-bucket statements: {cost}")
    finally:
        server.stop()
    all_met = all(t["met"] for r in results.values() for t in r["targets"].values())
    print(json.dumps({
        "benchmark": "fleet_budget",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"batch_size": BATCH_SIZE, "batch_sleep_sec": args.batch_sleep,
                     "max_in_flight": args.max_in_flight, "dimensions": DIMENSIONS,
                     "scale": args.scale, "seed": args.seed},
        "targets": TARGETS,
        "scenarios": results,
        "shared_bucket_statement": cost,
        "all_targets_met": all_met,
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
