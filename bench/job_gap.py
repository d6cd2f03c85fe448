"""The gap between two Jobs: from one Job's last provider request to the next one's first.

Runs the product as `make demo` does, on one machine: the API emulator
(`f1sandbox.kubeapi`), the real `f1backfill operator` process, the job runner
(`f1sandbox.jobrunner`, which plays the kubelet and the Job controller and runs each Job's
real `f1backfill worker` process), the fake OpenAI provider (in this process) and a
throwaway PostgreSQL. `--yachts` backfills of `--rows` rows each are admitted one at a time
(`MAX_CONCURRENT_JOBS=1`, `RECONCILE_INTERVAL_SEC` at its default of 5 s), with the
`openai` provider against the fake.

Every consecutive pair of Jobs (A, B) is cut into the parts the time goes to, each from
timestamps taken where it happens:

  drain_tail       A's last request arrives at the fake -> A logs "finished"
                   (the last batch's answer and write, the lanes find the queue empty)
  worker_exit      A logs "finished" -> A's process has exited (interpreter shutdown)
  job_status       A exited -> A's Job shows Complete (the job runner; on a cluster: the
                   kubelet and the Job controller, not ours)
  admission        A's Job shows Complete -> B's Job exists (the operator: its watch,
                   its decision, the create)
  pod_start        B's Job exists -> B's process exists (the job runner reads the Secrets
                   and spawns it; on a cluster: scheduling, image, container: not ours)
  worker_imports   B's process exists -> B logs "starting" (the interpreter, imports,
                   settings, the provider's client)
  worker_startup   B logs "starting" -> B's first request arrives at the fake (database
                   connections, schema check, queueing the yacht's rows, the first claim)

Job events come from a watch on the emulator (millisecond times); processes from the job
runner, polled every 5 ms (their start time from /proc, 10 ms resolution); log lines carry
milliseconds; the fake records when each request arrives. The parts add up to the gap.

Prints ONE JSON line on stdout (each part's median, p95 and max, and the gap's); progress
on stderr.

    PYTHONPATH=. .venv/bin/python bench/job_gap.py [--yachts 8] [--rows 300]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.support` lives at the repository root
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from f1sandbox.fake_openai import FakeOpenAI  # noqa: E402
from f1sandbox.jobrunner import JobRunner  # noqa: E402
from f1sandbox.localdb import LocalPostgres, free_port  # noqa: E402
from f1sandbox.samples import add_rows, add_yacht  # noqa: E402
from tests.support.stack import backfill, running_stack  # noqa: E402

NAMESPACE = "fleet"  # the one running_stack creates, with the workers' Secrets
PARTS = ("drain_tail", "worker_exit", "job_status", "admission", "pod_start",
         "worker_imports", "worker_startup")
OURS = {"drain_tail": True, "worker_exit": True, "job_status": False, "admission": True,
        "pod_start": False, "worker_imports": True, "worker_startup": True}
# The worker's log lines (cli._setup_logging: "%(asctime)s ..." with milliseconds).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class RecordingFake(FakeOpenAI):
    """The fake provider, remembering when each embeddings request arrived (wall clock)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []

    def _embeddings(self, authorization, body):  # the fake's hook, wrapped
        self.arrivals.append(time.time())
        return super()._embeddings(authorization, body)


class JobWatch:
    """A watch on the emulator's Jobs: when each was first seen, and first seen finished."""

    def __init__(self, url: str) -> None:
        self.url = urllib.parse.urlsplit(url)
        self.created: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.outcome: dict[str, str] = {}
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="job-watch", daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:  # ends the read in the thread, and the server's watch
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.url.hostname, self.url.port)
        connection.connect()
        self._socket = connection.sock
        connection.request(
            "GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?watch=true&timeoutSeconds=3600")
        response = connection.getresponse()
        try:
            for line in response:
                if not line.strip():
                    continue
                seen = time.time()
                event = json.loads(line)
                job = event.get("object") or {}
                name = (job.get("metadata") or {}).get("name")
                if not name or event.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                self.created.setdefault(name, seen)
                for condition in (job.get("status") or {}).get("conditions") or []:
                    if condition.get("type") in ("Complete", "Failed") \
                            and condition.get("status") == "True":
                        self.finished.setdefault(name, seen)
                        self.outcome[name] = condition["type"]
        except (OSError, ValueError, http.client.HTTPException):
            return  # closed at the end


class ProcessWatch:
    """The job runner's worker processes: when each started (/proc) and was seen gone."""

    def __init__(self, runner, jobs: JobWatch, interval: float = 0.005) -> None:
        self.runner = runner
        self.jobs = jobs
        self.interval = interval
        self.started: dict[str, float] = {}
        self.exited: dict[str, float] = {}
        self._pids: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            running = {name for _, name in self.runner.running()}
            for name in list(self.jobs.created):
                if name not in self._pids:
                    pids = self.runner.pids(NAMESPACE, name)
                    if pids:
                        self._pids[name] = pids[0]
                        self.started[name] = process_start(pids[0]) or now
                elif name not in self.exited and name not in running:
                    self.exited[name] = now
            self._stop.wait(self.interval)


def process_start(pid: int) -> float | None:
    """When a process started, as epoch seconds: /proc's start time (clock ticks since
    boot) against the boot clock. Not psutil's create_time, which counts from the boot
    time in whole seconds and is up to a second off."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)


def log_times(path: Path) -> dict[str, float]:
    """When the worker logged that it started and finished (epoch seconds)."""
    found: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_TIME.match(line)
        if not match:
            continue
        when = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
        if " starting for yacht " in line:
            found.setdefault("starting", when)
        elif " finished: RunSummary" in line:
            found["finished"] = when
    return found


def stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"count": len(values), "median": round(statistics.median(values), 3),
            "p95": round(p95, 3), "max": round(max(values), 3), "min": round(min(values), 3)}


def run(server: LocalPostgres, args: argparse.Namespace, workdir: Path) -> dict:
    fake = RecordingFake(rpm=10_000_000, tpm=10_000_000_000, latency=args.latency_ms / 1000,
                         dimensions=1536).start()
    try:
        with running_stack(server, workdir, fake=fake) as stack:
            conn = psycopg2.connect(stack.database_url)
            conn.autocommit = True
            names = []
            try:
                for n in range(args.yachts):
                    yacht = add_yacht(conn, f"M/Y Gap {n}")
                    add_rows(conn, yacht.id, args.rows, seed=n, max_chars=1500)
                    names.append(f"gap-{n:02d}")
                    stack.apply(backfill(names[-1], yacht.id, namespace=NAMESPACE,
                                         yachtName=yacht.name, batchSleepSeconds=0,
                                         priority=1000 - n))
            finally:
                conn.close()
            # As in a pod, each worker serves /health and /metrics on a port (the stack's
            # own runner gives them none): stopping that server is part of a worker's exit.
            runner = stack.runner = JobRunner(
                stack.api, workdir / "jobs", inherit_env=True, grace_period=10,
                rewrite=lambda argv, env, job: env.update(PROMETHEUS_PORT=str(free_port()))
                or argv).start()
            started = time.monotonic()
            with JobWatch(stack.api.url) as jobs, ProcessWatch(runner, jobs) as processes:
                stack.start_operator(RECONCILE_INTERVAL_SEC=str(args.tick),
                                     DRIFT_INTERVAL_SEC="3600", MAX_CONCURRENT_JOBS="1")
                timed_out = False
                while True:
                    phases = stack.phases()
                    if all(phases.get(n) in ("Succeeded", "Failed") for n in names):
                        break
                    if time.monotonic() > started + args.timeout:
                        timed_out = True
                        log(f"  timed out: {phases}")
                        break
                    time.sleep(0.2)
                time.sleep(0.2)
            wall = time.monotonic() - started
            phases = stack.phases()
            stack.stop_operator()
            logs = {name: log_times(runner.log_path(NAMESPACE, name)) for name in jobs.created}
    finally:
        fake.stop()

    arrivals = sorted(fake.arrivals)
    order = sorted(jobs.created, key=jobs.created.get)
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    gaps, pairs = [], []
    for a, b in itertools.pairwise(order):
        try:
            b_spawned = processes.started[b]
            last = max(t for t in arrivals if t < b_spawned)
            first = min(t for t in arrivals if t > b_spawned)
            times = {
                "a_last_request": last, "a_finished": logs[a]["finished"],
                "a_exited": processes.exited[a], "a_complete": jobs.finished[a],
                "b_created": jobs.created[b], "b_spawned": b_spawned,
                "b_starting": logs[b]["starting"], "b_first_request": first}
        except (KeyError, ValueError) as missing:
            log(f"  pair {a} -> {b}: incomplete ({missing!r}); left out")
            continue
        steps = list(times.values())
        pair = {part: round(later - earlier, 4) for part, earlier, later
                in zip(PARTS, steps[:-1], steps[1:], strict=True)}
        pair["gap"] = round(first - last, 4)
        pairs.append(pair)
        gaps.append(first - last)
        for part in PARTS:
            parts[part].append(pair[part])
    medians = {part: stats(values) for part, values in parts.items()}
    ours = sum(medians[p].get("median", 0.0) for p in PARTS if OURS[p])
    return {
        "yachts": args.yachts, "rows_per_yacht": args.rows, "latency_ms": args.latency_ms,
        "reconcile_interval_seconds": args.tick,
        "jobs": len(order),
        "jobs_not_complete": [n for n in order if jobs.outcome.get(n) != "Complete"],
        "succeeded": sum(1 for p in phases.values() if p == "Succeeded"),
        "timed_out": timed_out, "wall_seconds": round(wall, 1),
        "requests": len(arrivals),
        "gap_seconds": stats(gaps),
        "parts_seconds": medians,
        "ours": OURS,
        "sum_of_our_medians_seconds": round(ours, 3),
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yachts", type=int, default=8, help="backfills, run one at a time")
    parser.add_argument("--rows", type=int, default=300, help="rows per yacht")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the fake's latency")
    parser.add_argument("--tick", type=float, default=5.0, help="RECONCILE_INTERVAL_SEC")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    began = time.monotonic()
    server = LocalPostgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="f1-gap-") as tmp:
            result = run(server, args, Path(tmp))
    finally:
        server.stop()
    ok = (not result["timed_out"] and not result["jobs_not_complete"]
          and result["succeeded"] == args.yachts)
    gap = result["gap_seconds"]
    log(f"  {result['jobs']} Jobs; gap median {gap.get('median')}s, max {gap.get('max')}s; "
        + ", ".join(f"{p} {result['parts_seconds'][p].get('median')}" for p in PARTS))
    print(json.dumps({
        "benchmark": "job_gap",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_average": os.getloadavg()},
        **result,
        "all_succeeded": ok,
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
