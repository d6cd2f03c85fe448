"""The operator's admission: decision time, memory at fleet scale, and admission latency.

Three scenarios, each selectable with --scenario (default: all three):

  decision           in-process, no I/O: the pure `admission.decide` plus the reconciler's
                     desired statuses (`Reconciler._desired`: `build_status` and a change
                     check per backfill), which is what the operator's
                     `f1_operator_decision_seconds` times; apart, the encoding of the merge
                     patches, which the operator does as it writes each status (reported as
                     encode_patches_ms and total_with_patches_ms). At 134, 1,000 and 10,000
                     backfills (a mix of tiers, priority overrides, suspended, Continuous and
                     invalid specs, 3 unfinished Jobs and ~1.5% finished ones); the median of
                     --runs runs of three ticks: the first (no status yet, every backfill
                     patched), a steady one (statuses as the first wrote them) and one after
                     a drift re-check; with the garbage collector's thresholds set as the
                     operator sets them (`memory.configure_gc`). Also the memory of holding
                     10,000 observed backfills (tracemalloc and RSS, in a fresh interpreter).
  operator-scale     the real operator process (`f1backfill operator`) against the API
                     emulator with 134, 1,000 and 10,000 YachtBackfills (one yacht of 3 rows
                     per CR, loaded with generate_series), MAX_CONCURRENT_JOBS=1 and no job
                     runner (the one admitted Job never starts): the time until every CR has a
                     status, the operator's VmRSS and VmHWM, and the mean decision and tick
                     time of the steady-state ticks from its /metrics (the difference of two
                     scrapes --window seconds apart). Then, at the smallest scale, the status
                     writes that drift checks alone cause (DRIFT_INTERVAL_SEC=5).
  admission-latency  20 tiny yachts (5 rows each, hash embeddings), the job runner and real
                     worker processes, RECONCILE_INTERVAL_SEC at its default of 5 s: the time
                     from a Job's completion to the creation of the next one, as a sampler
                     polling the emulator every 25 ms first sees them.

Prints ONE JSON line (figures and targets, with pass/fail) on stdout; progress on stderr.

    PYTHONPATH=. .venv/bin/python bench/operator_admission.py [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.support` lives at the repository root
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg2  # noqa: E402

from f1backfill.admission import JobState, ObservedJob, decide  # noqa: E402
from f1backfill.api import DriftStatus, job_name  # noqa: E402
from f1backfill.builders.status import status_patch  # noqa: E402
from f1backfill.config import OperatorSettings  # noqa: E402
from f1backfill.constants import PLURAL  # noqa: E402
from f1backfill.controller.metrics import OperatorMetrics  # noqa: E402
from f1backfill.controller.observe import observe_backfill  # noqa: E402
from f1backfill.controller.reconciler import Reconciler  # noqa: E402
from f1backfill.db.figures import YachtFigures  # noqa: E402
from f1backfill.memory import configure_gc  # noqa: E402
from f1sandbox.localdb import LocalPostgres, free_port  # noqa: E402
from f1sandbox.samples import add_rows, add_yacht  # noqa: E402
from tests.support.stack import backfill, running_stack  # noqa: E402

SCALES = (134, 1_000, 10_000)
NAMESPACE = "fleet"  # the one running_stack creates, with the workers' Secrets

TARGETS = {
    "decision_10k_seconds_max": 1.0,
    "operator_10k_decision_seconds_max": 1.0,
    "operator_10k_rss_mib_max": 250.0,
    "admission_latency_seconds_max": 2.0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check(value: float | None, target: float, at_least: bool = False) -> dict:
    met = value is not None and (value >= target if at_least else value <= target)
    return {"value": value, "target": target, "op": ">=" if at_least else "<=", "met": met}


def proc_status_kib(pid: int, field: str) -> int | None:
    """A `/proc/<pid>/status` figure (VmRSS, VmHWM) in KiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# -- 1. decision: in-process -----------------------------------------------------------------
TIERS = (("enterprise", 0.1), ("premium", 0.3), ("standard", 0.6))


def fleet_bodies(count: int, rng: random.Random) -> tuple[list[dict], dict[str, int]]:
    """`count` YachtBackfill bodies as the API serves them (a realistic mix of tiers,
    priority overrides, suspended and Continuous backfills, a few invalid specs), and each
    yacht's outstanding rows."""
    now = datetime.now(UTC)
    bodies, work = [], {}
    for n in range(count):
        yacht = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
        spec: dict = {"yachtId": yacht, "yachtName": f"M/Y Bench {n}", "tier": tier}
        if rng.random() < 0.10:
            spec["priority"] = rng.randint(0, 1000)
        if rng.random() < 0.02:
            spec["suspend"] = True
        if rng.random() < 0.05:
            spec["mode"] = "Continuous"
        if rng.random() < 0.05:
            spec["skipObjectTypes"] = ["email"]
        if rng.random() < 0.002:
            spec["batchSize"] = 0  # invalid: the operator marks it Failed (InvalidSpec)
        created = now - timedelta(seconds=rng.randint(0, 30 * 86400))
        bodies.append({
            "apiVersion": "f1cortex.io/v1alpha1", "kind": "YachtBackfill",
            "metadata": {"name": f"yacht-{n:05d}", "namespace": NAMESPACE,
                         "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                         "generation": 1, "resourceVersion": str(1000 + n),
                         "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "spec": spec})
        work[yacht] = 0 if rng.random() < 0.2 else rng.randint(1, 5000)
    return bodies, work


def fleet_figures(work: dict[str, int], rng: random.Random) -> dict[str, YachtFigures]:
    figures = {}
    for yacht, outstanding in work.items():
        dlq = rng.choice((0, 0, 0, 1, 3, 150))
        queued = outstanding // 2
        figures[yacht] = YachtFigures(
            total=5000 + dlq, embedded=5000 - outstanding, pending=outstanding - queued,
            queued=queued, dlq=dlq, unresolved_dlq=dlq)
    return figures


def fleet_jobs(bodies: list[dict], work: dict[str, int], rng: random.Random
               ) -> list[ObservedJob]:
    """A few unfinished Jobs (one Pending, two Active), finished ones for ~1.5% of the
    fleet: Succeeded where the yacht is drained, Failed elsewhere."""
    jobs = []
    candidates = [b for b in bodies if "batchSize" not in b["spec"]
                  and not b["spec"].get("suspend")]
    for n, body in enumerate(rng.sample(candidates, max(3, len(candidates) * 15 // 1000))):
        meta, yacht = body["metadata"], body["spec"]["yachtId"]
        if n < 3:
            state = JobState.PENDING if n == 0 else JobState.ACTIVE
        else:
            state = JobState.SUCCEEDED if work[yacht] == 0 or n % 3 else JobState.FAILED
        jobs.append(ObservedJob(
            namespace=meta["namespace"], name=job_name(meta["namespace"], meta["name"],
                                                       meta["uid"], 1),
            backfill_uid=meta["uid"], yacht_id=yacht, admission=1, state=state,
            reason="BackoffLimitExceeded" if state is JobState.FAILED else "",
            message="Job has reached the specified backoff limit"
            if state is JobState.FAILED else ""))
    return jobs


def bench_reconciler(max_concurrent_jobs: int, yachts: list[str]) -> Reconciler:
    """The operator's reconciler without clients (`_desired` touches none of them), with a
    drift result per yacht, as after the operator's first drift check."""
    settings = OperatorSettings(max_concurrent_jobs=max_concurrent_jobs)
    reconciler = Reconciler(settings, kube=None, db=None, metrics=OperatorMetrics(), gate=None)
    recheck_drift(reconciler, yachts)
    return reconciler


_DRIFT_CHECKS = itertools.count()


def recheck_drift(reconciler: Reconciler, yachts: list[str]) -> None:
    """What `Reconciler._check_drift` leaves behind: every yacht checked, none stale. Each
    call is a second later than the last, as real checks (DRIFT_INTERVAL_SEC >= 1) are:
    the status carries the time to the second, so two checks within one second would look
    the same."""
    checked = datetime.now(UTC) + timedelta(seconds=next(_DRIFT_CHECKS))
    for yacht in yachts:
        reconciler.drift[yacht] = DriftStatus(stale_rows=0, last_checked_at=checked)


def one_decision(reconciler: Reconciler, backfills, jobs, work, figures) -> dict:
    """What one tick does between reading and writing, timed in its two parts (the sum is
    what the operator reports as f1_operator_decision_seconds)."""
    started = time.perf_counter()
    decision = decide(backfills, jobs, work,
                      max_concurrent_jobs=reconciler.settings.max_concurrent_jobs,
                      job_retries=reconciler.settings.job_retries)
    decided = time.perf_counter()
    desired = reconciler._desired(decision, backfills, figures)
    ended = time.perf_counter()
    # The operator encodes each merge patch as it writes it; timed apart, for the record.
    patches = [status_patch(d.backfill.status, d.status) for d in desired if d.changed]
    encoded = time.perf_counter()
    return {"decide": decided - started, "desired": ended - decided, "total": ended - started,
            "encode": encoded - ended, "with_patches": encoded - started,
            "patches": sum(p is not None for p in patches),
            "decision": decision, "desired_items": desired}


def time_decisions(reconciler: Reconciler, backfills, jobs, work, figures, runs: int,
                   before=None) -> dict:
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        samples.append(one_decision(reconciler, backfills, jobs, work, figures))
    last = samples[-1]

    def median_ms(key: str) -> float:
        return round(1000 * statistics.median(s[key] for s in samples), 1)

    return {
        "decide_ms": median_ms("decide"),
        "desired_statuses_ms": median_ms("desired"),
        "total_ms": median_ms("total"),
        "total_min_ms": round(1000 * min(s["total"] for s in samples), 1),
        "total_max_ms": round(1000 * max(s["total"] for s in samples), 1),
        "encode_patches_ms": median_ms("encode"),
        "total_with_patches_ms": median_ms("with_patches"),
        "admitted": len(last["decision"].admit),
        "patches": last["patches"],
        "events": sum(len(d.events) for d in last["desired_items"]),
    }


def steady_bodies(bodies: list[dict], jobs: list[ObservedJob], first: dict
                  ) -> tuple[list[dict], list[ObservedJob]]:
    """The cluster after the first tick's writes: each body with the status written
    (through JSON and back, as the watch delivers it) and the admitted Jobs, not started."""
    statuses = {d.backfill.uid: d.status.to_dict() for d in first["desired_items"]}
    written = [{**b, "status": json.loads(json.dumps(statuses[b["metadata"]["uid"]]))}
               if b["metadata"]["uid"] in statuses else b for b in bodies]
    admitted = [ObservedJob(namespace=b.namespace, name=job_name(b.namespace, b.name, b.uid, n),
                            backfill_uid=b.uid, yacht_id=b.spec.yacht_id, admission=n,
                            state=JobState.PENDING)
                for b, n in first["decision"].admit]
    return written, jobs + admitted


def fleet(count: int, seed: int, slots: int) -> dict:
    """Everything one scale needs, generated the same way in the memory probe."""
    rng = random.Random(seed + count)
    bodies, work = fleet_bodies(count, rng)
    figures = fleet_figures(work, rng)
    jobs = fleet_jobs(bodies, work, rng)
    reconciler = bench_reconciler(slots, list(work))
    backfills = [observe_backfill(b) for b in bodies]
    first = one_decision(reconciler, backfills, jobs, work, figures)
    written, steady_jobs = steady_bodies(bodies, jobs, first)
    return {"bodies": bodies, "work": work, "figures": figures, "jobs": jobs,
            "reconciler": reconciler, "backfills": backfills, "written": written,
            "steady_jobs": steady_jobs}


def memory_probe(count: int, seed: int, slots: int) -> dict:
    """Run in a fresh interpreter (see `held_memory`): the cost of holding `count` observed
    backfills with their statuses, as the operator's cache holds them."""
    written = fleet(count, seed, slots)["written"]
    gc.collect()
    before = proc_status_kib(os.getpid(), "VmRSS")
    held = [observe_backfill(b) for b in written]
    gc.collect()
    after = proc_status_kib(os.getpid(), "VmRSS")
    tracemalloc.start()
    again = [observe_backfill(b) for b in written]
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(held) == len(again)
    return {"backfills": count, "tracemalloc_mib": round(traced / 2**20, 1),
            "tracemalloc_bytes_per_backfill": round(traced / count),
            "rss_delta_mib": mib(after - before) if before and after else None,
            "status_json_bytes_per_backfill": round(
                sum(len(json.dumps(b.get("status") or {})) for b in written) / count)}


def held_memory(count: int, args: argparse.Namespace) -> dict:
    """`memory_probe` in a child interpreter: in this one, memory freed by the earlier
    scales would be reused and the RSS delta would read as nothing."""
    result = subprocess.run(
        [sys.executable, __file__, "--memory-probe", str(count), "--seed", str(args.seed),
         "--decision-slots", str(args.decision_slots)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout)


def run_decision(args: argparse.Namespace) -> dict:
    """In this process, with the garbage collector set as the operator sets it."""
    default = gc.get_threshold()
    configure_gc()
    try:
        return decisions(args)
    finally:
        gc.set_threshold(*default)


def decisions(args: argparse.Namespace) -> dict:
    result: dict = {"max_concurrent_jobs": args.decision_slots, "runs": args.runs,
                    "gc_threshold": list(gc.get_threshold()), "scales": {}}
    for count in args.scales:
        f = fleet(count, args.seed, args.decision_slots)
        reconciler, work, figures = f["reconciler"], f["work"], f["figures"]
        started = time.perf_counter()
        steady_backfills = [observe_backfill(b) for b in f["written"]]
        observe_ms = 1000 * (time.perf_counter() - started)
        first = time_decisions(reconciler, f["backfills"], f["jobs"], work, figures, args.runs)
        steady = time_decisions(reconciler, steady_backfills, f["steady_jobs"], work, figures,
                                args.runs)
        # A drift re-check (every DRIFT_INTERVAL_SEC) gives every yacht a new lastCheckedAt.
        recheck = time_decisions(reconciler, steady_backfills, f["steady_jobs"], work,
                                 figures, args.runs,
                                 before=lambda r=reconciler, y=list(work): recheck_drift(r, y))
        entry = {"backfills": count, "jobs": len(f["steady_jobs"]),
                 "yachts_with_work": sum(1 for w in work.values() if w),
                 "observe_all_ms": round(observe_ms, 1),
                 "first_tick": first, "steady_tick": steady, "drift_recheck_tick": recheck}
        result["scales"][str(count)] = entry
        log(f"decision @ {count:,}: first tick {first['total_ms']} ms "
            f"(decide {first['decide_ms']}, statuses {first['desired_statuses_ms']}; "
            f"patches encoded at write {first['encode_patches_ms']}), "
            f"steady {steady['total_ms']} ms ({steady['patches']} patches), "
            f"after a drift re-check {recheck['total_ms']} ms ({recheck['patches']} patches)")
    largest = max(args.scales)
    result["memory"] = held_memory(largest, args)
    log(f"decision: {largest:,} observed backfills hold {result['memory']['tracemalloc_mib']} "
        f"MiB (tracemalloc), RSS +{result['memory']['rss_delta_mib']} MiB")
    ticks = result["scales"][str(largest)]
    worst = max(ticks[k]["total_ms"] for k in ("first_tick", "steady_tick",
                                               "drift_recheck_tick")) / 1000
    result["targets"] = {
        f"decided_{largest}_seconds_worst_median": check(
            round(worst, 3), TARGETS["decision_10k_seconds_max"]),
        f"decided_{largest}_seconds_steady_median": check(
            round(ticks["steady_tick"]["total_ms"] / 1000, 3),
            TARGETS["decision_10k_seconds_max"]),
    }
    return result


# -- 2. operator-scale: the operator process against the emulator -------------------------
OBJECT_TYPES_SQL = "ARRAY['work_order', 'equipment', 'document', 'email', 'certificate']"
METRIC_RE = re.compile(r"^(f1_operator_(?:decision|tick)_seconds_(?:sum|count)) (\S+)$", re.M)


def load_fleet(database_url: str, count: int, rows: int) -> list[tuple[str, str, str]]:
    """`count` yachts of `rows` rows each: two INSERT ... SELECT over generate_series."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO yachts (id, name, tier) "
                "SELECT gen_random_uuid(), 'M/Y Bench ' || g, "
                "(ARRAY['enterprise', 'premium', 'standard', 'standard'])[1 + g %% 4] "
                "FROM generate_series(1, %s) AS g RETURNING id, name, tier", (count,))
            yachts = [(str(i), name, tier) for i, name, tier in cur.fetchall()]
            cur.execute(
                "INSERT INTO search_index (object_type, object_id, yacht_id, search_text) "
                f"SELECT ({OBJECT_TYPES_SQL})[1 + r %% 5], gen_random_uuid(), y.id, "
                "'engine oil filter replaced, watermaker serviced, row ' || r "
                "FROM yachts AS y CROSS JOIN generate_series(1, %s) AS r", (rows,))
            cur.execute("ANALYZE")
    finally:
        conn.close()
    return yachts


def apply_backfills(stack, yachts: list[tuple[str, str, str]], rng: random.Random) -> None:
    for n, (yacht, name, tier) in enumerate(yachts):
        extra = {"priority": rng.randint(0, 1000)} if rng.random() < 0.1 else {}
        stack.apply(backfill(f"yacht-{n:05d}", yacht, namespace=NAMESPACE, tier=tier,
                             yachtName=name, **extra))


def statuses_written(api) -> int:
    """CRs that have a status.phase, counted on the emulator's own loop. (`api.objects`
    would deep-copy every object at each poll and hold the emulator's loop meanwhile.)"""
    resource = api.store.lookup(PLURAL)
    return api._call(lambda: sum(1 for o in api.store.iter_objects(resource, NAMESPACE)
                                 if (o.get("status") or {}).get("phase")))


def scrape(port: int) -> dict:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    figures = {name: float(value) for name, value in METRIC_RE.findall(text)}
    figures["scrape_bytes"] = len(text)
    figures["scrape_seconds"] = round(time.monotonic() - started, 3)
    return figures


def scrape_when_up(port: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def between(first: dict, second: dict, name: str) -> dict:
    ticks = int(second[f"{name}_count"] - first[f"{name}_count"])
    total = second[f"{name}_sum"] - first[f"{name}_sum"]
    return {"ticks": ticks, "mean_seconds": round(total / ticks, 4) if ticks else None}


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run_scale(server: LocalPostgres, count: int, args: argparse.Namespace, workdir: Path
              ) -> dict:
    log(f"== operator-scale @ {count:,} YachtBackfills")
    workdir.mkdir(parents=True, exist_ok=True)
    with running_stack(server, workdir) as stack:
        api = stack.api
        started = time.monotonic()
        yachts = load_fleet(stack.database_url, count, args.rows_per_yacht)
        load_s = time.monotonic() - started
        started = time.monotonic()
        apply_backfills(stack, yachts, random.Random(args.seed))
        apply_s = time.monotonic() - started
        log(f"  {count:,} yachts x {args.rows_per_yacht} rows in {load_s:.1f}s, "
            f"{count:,} CRs applied in {apply_s:.1f}s")
        port = free_port()
        requests_before = api.request_counts()
        bench = psutil.Process()
        bench_cpu = cpu_seconds(bench)
        started = time.monotonic()
        operator = stack.start_operator(
            RECONCILE_INTERVAL_SEC=str(args.scale_interval),
            DRIFT_INTERVAL_SEC=str(args.drift_interval), OPERATOR_METRICS_PORT=str(port),
            MAX_CONCURRENT_JOBS="1", DEFAULT_EMBEDDING_PROVIDER="hash", LOG_LEVEL="INFO")
        proc = psutil.Process(operator.pid)
        done, rss_max_kib, next_log = 0, 0, started + 10
        timed_out = False
        while done < count:
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited {operator.returncode}:\n"
                                   + stack.operator_output()[-3000:])
            rss_max_kib = max(rss_max_kib, proc_status_kib(operator.pid, "VmRSS") or 0)
            if time.monotonic() > started + args.scale_timeout:
                timed_out = True
                break
            if time.monotonic() > next_log:
                log(f"  {time.monotonic() - started:5.0f}s: {done:,} of {count:,} statuses, "
                    f"operator RSS {mib(rss_max_kib)} MiB")
                next_log += 10
            time.sleep(0.25)
            done = statuses_written(api)
        full_s = time.monotonic() - started
        first = scrape_when_up(port)
        operator_cpu_full = cpu_seconds(proc)
        bench_cpu_full = cpu_seconds(bench) - bench_cpu
        requests_full = api.request_counts()
        ticks = int(first.get("f1_operator_tick_seconds_count", 0))
        log(f"  every status written after {full_s:.1f}s ({ticks} ticks); steady window of "
            f"{args.window:g}s after {args.settle:g}s")
        time.sleep(args.settle)
        a = scrape(port)
        requests_a = api.request_counts()
        time.sleep(args.window)
        b = scrape(port)
        requests_b = api.request_counts()
        rss_kib = proc_status_kib(operator.pid, "VmRSS")
        hwm_kib = proc_status_kib(operator.pid, "VmHWM")
        operator_cpu = cpu_seconds(proc)
        steady_decision = between(a, b, "f1_operator_decision_seconds")
        steady_tick = between(a, b, "f1_operator_tick_seconds")
        stack.stop_operator()
        output = stack.operator_output()

    def delta(after: dict, before: dict) -> dict:
        return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
                if after.get(k, 0) - before.get(k, 0)}

    result = {
        "backfills": count,
        "rows_per_yacht": args.rows_per_yacht,
        "load_seconds": round(load_s, 1),
        "apply_seconds": round(apply_s, 1),
        "all_statuses_seconds": round(full_s, 1),
        "statuses_written": done,
        "timed_out": timed_out,
        "until_all_statuses": {
            # The first tick's writes end before the tick does: it may not be counted yet.
            "ticks_completed": int(first.get("f1_operator_tick_seconds_count", 0)),
            "decisions_completed": int(first.get("f1_operator_decision_seconds_count", 0)),
            "decision_seconds_sum": round(first.get("f1_operator_decision_seconds_sum", 0), 3),
            "tick_seconds_sum": round(first.get("f1_operator_tick_seconds_sum", 0), 3),
            "requests": delta(requests_full, requests_before),
            "operator_cpu_seconds": round(operator_cpu_full, 1),
            "bench_process_cpu_seconds": round(bench_cpu_full, 1),
        },
        "steady": {
            "window_seconds": args.window,
            "ticks": steady_tick["ticks"],
            "decision_mean_seconds": steady_decision["mean_seconds"],
            "tick_mean_seconds": steady_tick["mean_seconds"],
            "requests": delta(requests_b, requests_a),
            "metrics_scrape_bytes": int(b["scrape_bytes"]),
            "metrics_scrape_seconds": b["scrape_seconds"],
        },
        "operator_vmrss_mib": mib(rss_kib),
        "operator_vmhwm_mib": mib(hwm_kib),
        "operator_rss_max_sampled_mib": mib(max(rss_max_kib, rss_kib or 0)),
        "operator_cpu_seconds": round(operator_cpu, 1),
        "operator_errors": len(re.findall(r"\bERROR\b|Traceback", output)),
    }
    log(f"  steady: {result['steady']['ticks']} ticks, decision "
        f"{result['steady']['decision_mean_seconds']}s, tick "
        f"{result['steady']['tick_mean_seconds']}s; VmRSS {result['operator_vmrss_mib']} MiB, "
        f"VmHWM {result['operator_vmhwm_mib']} MiB")
    return result


def run_drift_churn(server: LocalPostgres, count: int, args: argparse.Namespace, workdir: Path
                    ) -> dict:
    """Status writes caused by drift checks alone: a settled fleet, DRIFT_INTERVAL_SEC=5."""
    log(f"== operator-scale: drift checks every 5 s @ {count:,} YachtBackfills")
    workdir.mkdir(parents=True, exist_ok=True)
    with running_stack(server, workdir) as stack:
        yachts = load_fleet(stack.database_url, count, args.rows_per_yacht)
        apply_backfills(stack, yachts, random.Random(args.seed))
        port = free_port()
        stack.start_operator(RECONCILE_INTERVAL_SEC="5", DRIFT_INTERVAL_SEC="5",
                             OPERATOR_METRICS_PORT=str(port), MAX_CONCURRENT_JOBS="1",
                             DEFAULT_EMBEDDING_PROVIDER="hash")
        deadline = time.monotonic() + args.scale_timeout
        while statuses_written(stack.api) < count and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(args.settle)
        a, before = scrape(port), stack.api.request_counts()
        time.sleep(args.window)
        b, after = scrape(port), stack.api.request_counts()
        stack.stop_operator()
    patches = after.get("PATCH", 0) - before.get("PATCH", 0)
    ticks = between(a, b, "f1_operator_tick_seconds")["ticks"]
    log(f"  {patches:,} status PATCHes in {args.window:g}s of a settled fleet ({ticks} ticks)")
    return {"backfills": count, "DRIFT_INTERVAL_SEC": 5, "window_seconds": args.window,
            "ticks": ticks, "status_patches": patches,
            "status_patches_per_backfill_per_minute": round(
                patches / count * 60 / args.window, 2)}


def run_operator_scale(server: LocalPostgres, args: argparse.Namespace, workdir: Path) -> dict:
    result: dict = {"settings": {"RECONCILE_INTERVAL_SEC": args.scale_interval,
                                 "DRIFT_INTERVAL_SEC": args.drift_interval,
                                 "MAX_CONCURRENT_JOBS": 1, "job_runner": False},
                    "scales": {}}
    for count in args.scales:
        result["scales"][str(count)] = run_scale(server, count, args, workdir / str(count))
    result["drift_churn"] = run_drift_churn(server, min(args.scales), args, workdir / "drift")
    largest = result["scales"][str(max(args.scales))]
    complete = largest["statuses_written"] == largest["backfills"]
    result["targets"] = {
        "all_statuses_written": {"value": largest["statuses_written"],
                                 "target": largest["backfills"], "op": "==", "met": complete},
        f"steady_decision_{max(args.scales)}_seconds": check(
            largest["steady"]["decision_mean_seconds"],
            TARGETS["operator_10k_decision_seconds_max"]),
        f"operator_vmhwm_{max(args.scales)}_mib": check(
            largest["operator_vmhwm_mib"], TARGETS["operator_10k_rss_mib_max"]),
        f"operator_vmrss_{max(args.scales)}_mib": check(
            largest["operator_vmrss_mib"], TARGETS["operator_10k_rss_mib_max"]),
    }
    return result


# -- 3. admission-latency: the job runner and real workers ----------------------------------
def finished_condition(job: dict) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


class JobSampler:
    """Polls the emulator's Jobs every `interval` seconds and keeps when each Job was first
    seen, and first seen finished (Complete or Failed)."""

    def __init__(self, api, interval: float) -> None:
        self.api = api
        self.interval = interval
        self.created: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.bodies: dict[str, dict] = {}
        self.polls = 0
        self.poll_seconds_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-sampler", daemon=True)

    def __enter__(self) -> JobSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            jobs = self.api.objects("jobs", NAMESPACE)
            seen = time.monotonic()
            self.polls += 1
            self.poll_seconds_max = max(self.poll_seconds_max, seen - asked)
            for job in jobs:
                name = job["metadata"]["name"]
                self.created.setdefault(name, seen)
                self.bodies[name] = job
                if finished_condition(job):
                    self.finished.setdefault(name, seen)
            self._stop.wait(self.interval)


def rfc3339(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def latency_stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "median": round(statistics.median(values), 3),
            "p95": round(percentile(values, 95), 3), "max": round(max(values), 3),
            "min": round(min(values), 3)}


def embedded_rows(database_url: str) -> int:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM search_index WHERE embedding_status = 'embedded'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def run_admission_latency(server: LocalPostgres, args: argparse.Namespace, workdir: Path
                          ) -> dict:
    log(f"== admission-latency: {args.yachts} yachts x {args.latency_rows} rows, "
        "RECONCILE_INTERVAL_SEC=5, job runner + hash workers")
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    with running_stack(server, workdir) as stack:
        conn = psycopg2.connect(stack.database_url)
        conn.autocommit = True
        try:
            names = []
            for n in range(args.yachts):
                tier = rng.choice(("enterprise", "premium", "standard"))
                yacht = add_yacht(conn, f"M/Y Latency {n}", tier)
                add_rows(conn, yacht.id, args.latency_rows, seed=n, max_chars=300)
                name = f"latency-{n:02d}"
                names.append(name)
                stack.apply(backfill(name, yacht.id, namespace=NAMESPACE, tier=tier,
                                     yachtName=yacht.name, batchSleepSeconds=0,
                                     embedding={"provider": "hash"}))
        finally:
            conn.close()
        port = free_port()
        stack.start_runner()
        started = time.monotonic()
        with JobSampler(stack.api, args.sample_interval) as sampler:
            stack.start_operator(RECONCILE_INTERVAL_SEC="5", DRIFT_INTERVAL_SEC="60",
                                 OPERATOR_METRICS_PORT=str(port), MAX_CONCURRENT_JOBS="1")
            timed_out = False
            while True:
                phases = stack.phases()
                if all(phases.get(n) in ("Succeeded", "Failed") for n in names):
                    break
                if time.monotonic() > started + args.latency_timeout:
                    timed_out = True
                    log(f"  timed out: {phases}")
                    break
                time.sleep(0.5)
            time.sleep(3 * args.sample_interval)  # the sampler's last look
        wall = time.monotonic() - started
        metrics = scrape(port)
        phases = stack.phases()
        stack.stop_operator()
        embedded = embedded_rows(stack.database_url)

    order = sorted(sampler.created, key=sampler.created.get)
    pairs, stamped, runs, failed = [], [], [], []
    for previous, following in itertools.pairwise(order):
        if previous not in sampler.finished:
            continue
        pairs.append(sampler.created[following] - sampler.finished[previous])
        done = rfc3339((sampler.bodies[previous].get("status") or {}).get("completionTime"))
        made = rfc3339(sampler.bodies[following]["metadata"].get("creationTimestamp"))
        if done and made:
            stamped.append((made - done).total_seconds())
    for name in order:
        if name in sampler.finished:
            runs.append(sampler.finished[name] - sampler.created[name])
        if finished_condition(sampler.bodies[name]) != "Complete":
            failed.append(name)
    stats = latency_stats(pairs)
    result = {
        "yachts": args.yachts,
        "rows_per_yacht": args.latency_rows,
        "sample_interval_seconds": args.sample_interval,
        "sampler_polls": sampler.polls,
        "sampler_poll_seconds_max": round(sampler.poll_seconds_max, 4),
        "jobs": len(order),
        "jobs_not_complete": failed,
        "succeeded": sum(1 for p in phases.values() if p == "Succeeded"),
        "rows_embedded": embedded,
        "timed_out": timed_out,
        "wall_seconds": round(wall, 1),
        "latency_seconds": stats,
        "latencies_seconds": [round(v, 3) for v in pairs],
        # creationTimestamp and completionTime have one-second resolution: a cross-check.
        "latency_from_timestamps_seconds": latency_stats(stamped),
        "job_run_seconds": latency_stats(runs),
        "operator_ticks": int(metrics.get("f1_operator_tick_seconds_count", 0)),
        "operator_tick_mean_seconds": round(
            metrics["f1_operator_tick_seconds_sum"] / metrics["f1_operator_tick_seconds_count"],
            4) if metrics.get("f1_operator_tick_seconds_count") else None,
    }
    ok = (not timed_out and not failed and result["succeeded"] == args.yachts
          and embedded == args.yachts * args.latency_rows)
    result["targets"] = {
        "every_backfill_succeeded": {"value": result["succeeded"], "target": args.yachts,
                                     "op": "==", "met": ok},
        "admission_latency_p95_seconds": check(stats.get("p95"),
                                               TARGETS["admission_latency_seconds_max"]),
        "admission_latency_max_seconds": check(stats.get("max"),
                                               TARGETS["admission_latency_seconds_max"]),
    }
    log(f"  {len(order)} Jobs in {wall:.1f}s; latency median {stats.get('median')}s, "
        f"p95 {stats.get('p95')}s, max {stats.get('max')}s")
    return result


# -- main ------------------------------------------------------------------------------------
SCENARIOS = ("decision", "operator-scale", "admission-latency")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(SCALES), help="fleet sizes (default 134,1000,10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="decision: runs per median")
    parser.add_argument("--decision-slots", type=int, default=4,
                        help="decision: max_concurrent_jobs (3 Jobs are unfinished)")
    parser.add_argument("--rows-per-yacht", type=int, default=3, help="operator-scale")
    parser.add_argument("--scale-interval", type=float, default=2.0,
                        help="operator-scale: RECONCILE_INTERVAL_SEC")
    parser.add_argument("--drift-interval", type=float, default=3600.0,
                        help="operator-scale: DRIFT_INTERVAL_SEC (the first tick checks "
                             "drift; later checks are kept out of the steady window)")
    parser.add_argument("--settle", type=float, default=4.0,
                        help="operator-scale: seconds between all statuses and the window")
    parser.add_argument("--window", type=float, default=30.0,
                        help="operator-scale: seconds of steady state measured")
    parser.add_argument("--scale-timeout", type=float, default=240.0,
                        help="operator-scale: seconds to wait for every status, per scale")
    parser.add_argument("--yachts", type=int, default=20, help="admission-latency")
    parser.add_argument("--latency-rows", type=int, default=5, help="admission-latency")
    parser.add_argument("--sample-interval", type=float, default=0.025,
                        help="admission-latency: seconds between looks at the Jobs")
    parser.add_argument("--latency-timeout", type=float, default=240.0)
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.seed, args.decision_slots)))
        return 0
    names = args.scenario or list(SCENARIOS)
    began = time.monotonic()
    results: dict = {}
    if "decision" in names:
        log("== decision (in-process)")
        results["decision"] = run_decision(args)
    if "operator-scale" in names or "admission-latency" in names:
        server = LocalPostgres.start()
        try:
            with tempfile.TemporaryDirectory(prefix="f1-bench-operator-") as tmp:
                if "operator-scale" in names:
                    results["operator-scale"] = run_operator_scale(
                        server, args, Path(tmp) / "scale")
                if "admission-latency" in names:
                    results["admission-latency"] = run_admission_latency(
                        server, args, Path(tmp) / "latency")
        finally:
            server.stop()
    all_met = all(t["met"] for r in results.values() for t in r["targets"].values())
    print(json.dumps({
        "benchmark": "operator_admission",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"scales": args.scales, "seed": args.seed, "runs": args.runs,
                     "decision_slots": args.decision_slots,
                     "rows_per_yacht": args.rows_per_yacht,
                     "scale_reconcile_interval_sec": args.scale_interval,
                     "scale_drift_interval_sec": args.drift_interval,
                     "settle_seconds": args.settle, "window_seconds": args.window,
                     "latency_yachts": args.yachts, "latency_rows": args.latency_rows,
                     "sample_interval_seconds": args.sample_interval},
        "targets": TARGETS,
        "scenarios": results,
        "all_targets_met": all_met,
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
