"""The embedding worker end to end: ceiling utilisation, 429s, requests per row, RSS, rows/s.

Runs the real worker (`f1backfill worker`, a child process, so its peak RSS and CPU are its
own) against the fake OpenAI provider (another child process, `python -m
f1sandbox.fake_openai`, so the fake's CPU is not charged to the worker) on a throwaway
PostgreSQL 18 + pgvector, one fresh database and one fresh fake per scenario:

  limited-20ms   OpenAI's tier limits (TPM 1,000,000, RPM 3,000, 60 s burst), 20 ms latency,
                 the provider starting spent as after a previous Job (--start empty, the
                 default) with rows for --steady-seconds (90) at the refill rate, or full
                 (--start full) with rows for the burst plus those 90 s
  limited-150ms  the same at 150 ms latency
  rss-24k        every text 24,000 chars, batch 100, 1,536 dims: the worker's peak RSS
  unlimited      latency 0 and limits nobody reaches: the worker's own rows/s

Prints ONE JSON line (figures and targets, with pass/fail) on stdout; progress on stderr.

    PYTHONPATH=. .venv/bin/python bench/worker_throughput.py [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.support` lives at the repository root
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg2  # noqa: E402

from f1backfill.db.migrate import migrate  # noqa: E402
from f1backfill.worker.ratelimit import SharedBucket, account_id  # noqa: E402
from f1sandbox.fake_openai import count_tokens  # noqa: E402
from f1sandbox.localdb import LocalPostgres  # noqa: E402
from f1sandbox.samples import add_rows, add_yacht, make_text, text_lengths  # noqa: E402

DIMENSIONS = 1536
BATCH_SIZE = 100
API_KEY = "sk-bench"
MODEL = "text-embedding-3-small"
# "Unlimited": limits no run of this size can reach, on both sides.
HUGE_RPM = 10_000_000
HUGE_TPM = 10_000_000_000

TARGETS = {
    "utilisation_min": 0.99,
    "rate_limited_share_max": 0.01,
    "requests_per_row_max": 0.02,
    "rss_24k_mib_max": 120.0,
    "unlimited_rows_per_second_min": 1000.0,
}


@dataclass(frozen=True)
class Texts:
    min_chars: int
    max_chars: int
    long_share: float
    long_chars: int


FLEET_TEXTS = Texts(min_chars=200, max_chars=3000, long_share=0.05, long_chars=24000)
LONG_TEXTS = Texts(min_chars=24000, max_chars=24000, long_share=0.0, long_chars=24000)


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: float
    rpm: int
    tpm: int
    burst_seconds: float
    texts: Texts
    rows: int  # 0: sized from the limits so the run lasts the burst plus the steady state
    limited: bool
    start_empty: bool = False  # the fake's buckets (and the account's row) start spent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    limited = {"rpm": args.rpm, "tpm": args.tpm, "burst_seconds": args.burst_seconds,
               "texts": FLEET_TEXTS, "rows": 0, "limited": True,
               "start_empty": args.start == "empty"}
    huge = {"rpm": HUGE_RPM, "tpm": HUGE_TPM, "burst_seconds": 60.0, "limited": False}
    return {
        "limited-20ms": Scenario("limited-20ms", 20.0, **limited),
        "limited-150ms": Scenario("limited-150ms", 150.0, **limited),
        "rss-24k": Scenario("rss-24k", 20.0, texts=LONG_TEXTS, rows=args.rss_rows, **huge),
        "unlimited": Scenario("unlimited", 0.0, texts=FLEET_TEXTS, rows=args.unlimited_rows,
                              **huge),
    }


def mean_tokens_per_row(texts: Texts, sample: int = 2000) -> float:
    """The fake's token count of an average generated row (same generator, own seed)."""
    rng = random.Random(12345)
    lengths = text_lengths(rng, min_chars=texts.min_chars, max_chars=texts.max_chars,
                           long_share=texts.long_share, long_chars=texts.long_chars)
    return sum(count_tokens(make_text(rng, next(lengths))) for _ in range(sample)) / sample


def rows_for(scenario: Scenario, steady_seconds: float) -> int:
    if scenario.rows:
        return scenario.rows
    # The burst (a full bucket) goes first, then the refill rate paces the rest.
    burst = 0.0 if scenario.start_empty else scenario.tpm * scenario.burst_seconds / 60.0
    tokens = burst + scenario.tpm / 60.0 * steady_seconds
    return math.ceil(tokens / mean_tokens_per_row(scenario.texts))


# -- child processes -----------------------------------------------------------------------
def start_fake(scenario: Scenario, log_path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "f1sandbox.fake_openai", "--port", "0",
               "--rpm", str(scenario.rpm), "--tpm", str(scenario.tpm),
               "--burst-seconds", str(scenario.burst_seconds),
               "--latency-ms", str(scenario.latency_ms), "--dimensions", str(DIMENSIONS)]
    if scenario.start_empty:
        command.append("--start-empty")
    with open(log_path, "ab") as errors:
        fake = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=errors)
    line = fake.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake provider did not start; see {log_path}")
    return fake, json.loads(line)["base_url"]


def fake_stats(base_url: str) -> dict:
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_fake/stats", timeout=10) as response:
        return json.load(response)


def worker_command() -> list[str]:
    script = Path(sys.executable).parent / "f1backfill"
    if script.exists():
        return [str(script), "worker"]
    return [sys.executable, "-m", "f1backfill.cli", "worker"]


def start_worker(scenario: Scenario, database_url: str, yacht_id: str, base_url: str,
                 args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url, "YACHT_ID": yacht_id,
        "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": API_KEY, "EMBEDDING_MODEL": MODEL,
        "OPENAI_BASE_URL": base_url, "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
        # The worker's budget is the account's limits.
        "RATE_LIMIT_RPM": str(scenario.rpm), "RATE_LIMIT_TPM": str(scenario.tpm),
        "BATCH_SIZE": str(BATCH_SIZE),
        # The default 0.1 s is a per-lane pause; with the limiter pacing it only idles
        # lanes (see docs/benchmarks.md).
        "BATCH_SLEEP_SEC": str(args.batch_sleep),
        "MAX_IN_FLIGHT": str(args.max_in_flight), "PROMETHEUS_PORT": "0", "LOG_LEVEL": "INFO",
    }
    with open(log_path, "ab") as output:
        return subprocess.Popen(worker_command(), cwd=ROOT, env=env, stdout=output,
                                stderr=subprocess.STDOUT)


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuMeter:
    """CPU seconds spent by a process (and optionally its children) since `start()`.

    Children that exit between samples lose their last fraction of a second; sampling
    twice a second keeps that small against runs of tens of seconds.
    """

    def __init__(self, pid: int, children: bool) -> None:
        self.root = psutil.Process(pid)
        self.children = children
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def _processes(self) -> list[psutil.Process]:
        found = [self.root]
        if self.children:
            with contextlib.suppress(psutil.Error):
                found += self.root.children()
        return found

    def _sample(self) -> dict[int, float]:
        seen = {}
        for process in self._processes():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seen[process.pid] = times.user + times.system
        return seen

    def start(self) -> None:
        self.base = self._sample()
        self.last = dict(self.base)

    def sample(self) -> None:
        self.last.update(self._sample())

    def seconds(self) -> float:
        return sum(value - self.base.get(pid, 0.0) for pid, value in self.last.items())


def postmaster_pid(server: LocalPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def wait_worker(worker: subprocess.Popen, deadline: float, fake_url: str,
                meters: list[CpuMeter]) -> tuple[int, object, int, bool]:
    """Poll until the worker exits (or kill it at `deadline`); its exact rusage via wait4."""
    peak_hwm = 0
    timed_out = False
    next_progress = time.monotonic() + 10
    next_cpu = 0.0
    started = time.monotonic()
    while True:
        pid, status, usage = os.wait4(worker.pid, os.WNOHANG)
        if pid:
            worker.returncode = os.waitstatus_to_exitcode(status)
            return worker.returncode, usage, peak_hwm, timed_out
        peak_hwm = max(peak_hwm, vm_hwm_kib(worker.pid) or 0)
        now = time.monotonic()
        if now >= next_cpu:
            for meter in meters:
                meter.sample()
            next_cpu = now + 0.5
        if now >= next_progress:
            try:
                stats = fake_stats(fake_url)
                log(f"  {now - started:5.0f}s: {stats['inputs_served']} rows served, "
                    f"{stats['requests']} requests, {stats['rate_limited']} x 429, "
                    f"RSS peak {peak_hwm / 1024:.0f} MiB")
            except OSError:
                pass
            next_progress = now + 10
        if now > deadline and not timed_out:
            log("  deadline passed: SIGTERM to the worker")
            timed_out = True
            worker.send_signal(signal.SIGTERM)
            deadline = now + 20  # then SIGKILL
        elif now > deadline:
            worker.kill()
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- one scenario --------------------------------------------------------------------------
def account_as_the_fake(database_url: str, scenario: Scenario) -> None:
    """The account's shared bucket in Postgres says what the fake holds. Started empty: the
    row the previous Job's worker left, spent. Started full, as an account nobody used for a
    minute: a row the workers of an idle account left refills to full (a new row would start
    empty, docs/design.md §10)."""
    SharedBucket(database_url, account_id(API_KEY, MODEL), scenario.rpm, scenario.tpm).close()
    if scenario.start_empty:
        return
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE provider_budget SET requests = requests_per_minute, "
                        "tokens = tokens_per_minute, updated_at = clock_timestamp()")
    finally:
        conn.close()


def db_figures(database_url: str, yacht_id: str) -> dict:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT embedding_status, count(*) FROM search_index WHERE yacht_id = %s "
                        "GROUP BY 1", (yacht_id,))
            statuses = dict(cur.fetchall())
            cur.execute(
                "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(started_at)),"
                " EXTRACT(EPOCH FROM max(finished_at) - min(finished_at))"
                " FROM embedding_jobs WHERE yacht_id = %s AND status = 'done'", (yacht_id,))
            done, claim_to_ack, ack_to_ack = cur.fetchone()
    finally:
        conn.close()
    return {"statuses": statuses, "done": int(done),
            "first_claim_to_last_ack_s": float(claim_to_ack or 0.0),
            "first_ack_to_last_ack_s": float(ack_to_ack or 0.0)}


def summary_from_log(log_path: Path) -> dict:
    text = log_path.read_text(errors="replace")
    match = re.search(r"finished: RunSummary\(([^)]*)\)", text)
    if not match:
        return {}
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", match.group(1))}


def run_scenario(server: LocalPostgres, scenario: Scenario, args: argparse.Namespace,
                 workdir: Path) -> dict:
    log(f"== {scenario.name}: latency {scenario.latency_ms:g} ms, RPM {scenario.rpm:,}, "
        f"TPM {scenario.tpm:,}, burst {scenario.burst_seconds:g} s"
        + (", starting spent" if scenario.start_empty else ""))
    database_url = server.create_database("bench_" + scenario.name.replace("-", "_"))
    migrate(database_url, dimensions=DIMENSIONS)
    rows = rows_for(scenario, args.steady_seconds)
    conn = psycopg2.connect(database_url)
    try:
        yacht = add_yacht(conn, f"Bench {scenario.name}")
        loaded = time.monotonic()
        t = scenario.texts
        add_rows(conn, yacht.id, rows, seed=args.seed, min_chars=t.min_chars,
                 max_chars=t.max_chars, long_share=t.long_share, long_chars=t.long_chars)
        with conn.cursor() as cur:
            cur.execute("SELECT sum(length(search_text)) FROM search_index")
            chars = int(cur.fetchone()[0])
    finally:
        conn.close()
    log(f"  {rows:,} rows ({chars / rows:,.0f} chars on average) loaded in "
        f"{time.monotonic() - loaded:.1f}s")

    worker_log = workdir / f"{scenario.name}.worker.log"
    fake, base_url = start_fake(scenario, workdir / f"{scenario.name}.fake.log")
    try:
        account_as_the_fake(database_url, scenario)
        fake_cpu = CpuMeter(fake.pid, children=False)
        pg_cpu = CpuMeter(postmaster_pid(server), children=True)
        fake_cpu.start()
        pg_cpu.start()
        started = time.monotonic()
        worker = start_worker(scenario, database_url, str(yacht.id), base_url, args,
                              worker_log)
        code, usage, hwm_kib, timed_out = wait_worker(
            worker, started + args.timeout, base_url, [fake_cpu, pg_cpu])
        wall = time.monotonic() - started
        fake_cpu.sample()
        pg_cpu.sample()
        stats = fake_stats(base_url)
    finally:
        stop(fake)
    db = db_figures(database_url, str(yacht.id))
    if code != 0:
        log(f"  worker exited {code}; last lines of {worker_log}:\n"
            + "\n".join(worker_log.read_text(errors="replace").splitlines()[-20:]))

    embedded = db["statuses"].get("embedded", 0)
    requests = stats["requests"]
    worker_cpu = usage.ru_utime + usage.ru_stime
    result = {
        "rows": rows,
        "rows_embedded": embedded,
        "statuses": db["statuses"],
        "exit_code": code,
        "timed_out": timed_out,
        "latency_ms": scenario.latency_ms,
        "limits": {"rpm": scenario.rpm, "tpm": scenario.tpm,
                   "burst_seconds": scenario.burst_seconds,
                   "start_empty": scenario.start_empty},
        "wall_seconds": round(wall, 2),
        "first_claim_to_last_ack_seconds": round(db["first_claim_to_last_ack_s"], 2),
        "provider_window_seconds": round(stats["elapsed_seconds"], 2),
        "rows_per_second_wall": round(embedded / wall, 1) if wall else None,
        "rows_per_second_claim_to_ack": round(embedded / db["first_claim_to_last_ack_s"], 1)
        if db["first_claim_to_last_ack_s"] else None,
        "tokens_served": stats["tokens_served"],
        "allowed_tokens": round(stats["allowed_tokens"]),
        "ceiling_utilisation": round(stats["tokens_served"] / stats["allowed_tokens"], 4)
        if stats["allowed_tokens"] else None,
        "tokens_at_first_request": round(stats["tokens_at_first_request"] or 0),
        # Beyond what the bucket held at the first request, the refill paced the rest.
        "steady_state_seconds": round(
            max(0.0, stats["tokens_served"] - (stats["tokens_at_first_request"] or 0))
            / (scenario.tpm / 60.0),
            1),
        "requests": requests,
        "requests_ok": stats["by_status"].get("200", 0),
        "by_status": stats["by_status"],
        "requests_per_row": round(requests / embedded, 4) if embedded else None,
        "rate_limited": stats["rate_limited"],
        "rate_limited_share": round(stats["rate_limited"] / requests, 4) if requests else None,
        "mean_tokens_per_row": round(stats["tokens_served"] / stats["inputs_served"], 1)
        if stats["inputs_served"] else None,
        # VmHWM, the kernel's high-water mark of the worker's own address space. Not
        # ru_maxrss: Linux folds the parent's RSS at fork into the child's ru_maxrss.
        "worker_peak_rss_mib": round(hwm_kib / 1024, 1),
        "worker_cpu_seconds": round(worker_cpu, 2),
        "worker_cpu_share_of_one_core": round(worker_cpu / wall, 2) if wall else None,
        "worker_cpu_ms_per_1000_rows": round(1e6 * worker_cpu / embedded, 1)
        if embedded else None,
        "fake_cpu_seconds": round(fake_cpu.seconds(), 2),
        "postgres_cpu_seconds": round(pg_cpu.seconds(), 2),
        "worker_summary": summary_from_log(worker_log),
    }
    result["targets"] = targets_for(scenario, result)
    log(f"  done: {embedded:,} rows in {wall:.1f}s, utilisation "
        f"{result['ceiling_utilisation']}, {stats['rate_limited']} x 429, "
        f"{result['requests_per_row']} requests/row, RSS {result['worker_peak_rss_mib']} MiB")
    return result


def check(value: float | None, target: float, at_least: bool) -> dict:
    met = value is not None and (value >= target if at_least else value <= target)
    return {"value": value, "target": target, "op": ">=" if at_least else "<=", "met": met}


def targets_for(scenario: Scenario, r: dict) -> dict:
    ok = r["exit_code"] == 0 and not r["timed_out"] and r["rows_embedded"] == r["rows"]
    t: dict = {"all_rows_embedded": {"value": r["rows_embedded"], "target": r["rows"],
                                     "op": "==", "met": ok}}
    if scenario.limited:
        t["ceiling_utilisation"] = check(r["ceiling_utilisation"], TARGETS["utilisation_min"],
                                         True)
        t["rate_limited_share"] = check(r["rate_limited_share"],
                                        TARGETS["rate_limited_share_max"], False)
    if scenario.texts is FLEET_TEXTS:
        t["requests_per_row"] = check(r["requests_per_row"], TARGETS["requests_per_row_max"],
                                      False)
    if scenario.name == "rss-24k":
        t["worker_peak_rss_mib"] = check(r["worker_peak_rss_mib"], TARGETS["rss_24k_mib_max"],
                                         False)
    if scenario.name == "unlimited":
        t["rows_per_second"] = check(r["rows_per_second_claim_to_ack"],
                                     TARGETS["unlimited_rows_per_second_min"], True)
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append",
                        choices=["limited-20ms", "limited-150ms", "rss-24k", "unlimited"],
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--rpm", type=int, default=3000, help="limited scenarios' RPM")
    parser.add_argument("--tpm", type=int, default=1_000_000, help="limited scenarios' TPM")
    parser.add_argument("--burst-seconds", type=float, default=60.0,
                        help="bucket capacity in seconds of refill (OpenAI: 60)")
    parser.add_argument("--start", choices=["empty", "full"], default="empty",
                        help="limited scenarios: the provider's buckets (and the account's "
                        "shared bucket) start spent, as after a previous Job (default), or "
                        "full, as for an account nobody used for a minute")
    parser.add_argument("--steady-seconds", type=float, default=90.0,
                        help="limited scenarios: seconds of steady state after the burst")
    parser.add_argument("--rss-rows", type=int, default=2000, help="rows of the rss-24k run")
    parser.add_argument("--unlimited-rows", type=int, default=20000,
                        help="rows of the unlimited run")
    parser.add_argument("--max-in-flight", type=int, default=4, help="MAX_IN_FLIGHT")
    parser.add_argument("--batch-sleep", type=float, default=0.0,
                        help="BATCH_SLEEP_SEC (the default 0.1 for comparison)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds before a scenario's worker is stopped")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    chosen = scenarios(args)
    names = args.scenario or list(chosen)
    began = time.monotonic()
    results = {}
    server = LocalPostgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="f1-bench-") as tmp:
            for name in names:
                results[name] = run_scenario(server, chosen[name], args, Path(tmp))
    finally:
        server.stop()
    all_met = all(t["met"] for r in results.values() for t in r["targets"].values())
    print(json.dumps({
        "benchmark": "worker_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"batch_size": BATCH_SIZE, "batch_sleep_sec": args.batch_sleep,
                     "max_in_flight": args.max_in_flight, "dimensions": DIMENSIONS,
                     "steady_seconds": args.steady_seconds, "provider_start": args.start,
                     "fleet_texts": asdict(FLEET_TEXTS), "seed": args.seed},
        "targets": TARGETS,
        "scenarios": results,
        "all_targets_met": all_met,
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
