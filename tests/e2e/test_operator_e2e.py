"""The operator as kopf runs it, against the emulated API, with real worker processes.

Emulated Kubernetes API + embedded Postgres + the fake OpenAI server + the operator
process + the job runner (playing kubelet) + `f1backfill worker` processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.stack import backfill
from tests.support.waiting import wait_for


class JobWatch:
    """Samples the cluster while a test runs: the most Jobs ever unfinished at once, and
    the order in which Jobs appeared."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.max_unfinished = 0
        self.seen: list[str] = []  # Job names in order of first sight
        self.owners: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self.stack.jobs()
            unfinished = self.stack.unfinished_jobs()
            self.max_unfinished = max(self.max_unfinished, len(unfinished))
            for job in sorted(jobs, key=lambda j: int(j["metadata"]["resourceVersion"])):
                name = job["metadata"]["name"]
                if name not in self.seen:
                    self.seen.append(name)
                    self.owners[name] = job["metadata"]["ownerReferences"][0]["name"]
            self._stop.wait(0.05)

    def admission_order(self) -> list[str]:
        return [self.owners[name] for name in self.seen]


def all_succeeded(stack, names) -> bool:
    phases = stack.phases()
    return all(phases.get(n) == "Succeeded" for n in names)


def test_fleet_is_admitted_one_job_at_a_time_in_priority_order(stack, stack_db):
    fleet = {  # name: (tier, rows)
        "standard-30": ("standard", 30),
        "enterprise-60": ("enterprise", 60),
        "premium-40": ("premium", 40),
        "premium-20": ("premium", 20),  # same priority, fewer entities: goes first
    }
    yachts = {}
    for n, (name, (tier, rows)) in enumerate(fleet.items()):
        yachts[name] = add_yacht(stack_db, name, tier)
        add_rows(stack_db, yachts[name].id, rows, seed=n, max_chars=400)
        stack.apply(backfill(name, yachts[name].id, tier=tier, yachtName=name,
                             batchSleepSeconds=0))
    stack.start_runner()
    with JobWatch(stack) as watch:
        stack.start_operator()
        wait_for(lambda: stack.status("standard-30").get("queuePosition") == 3, timeout=30,
                 message=stack.phases)
        wait_for(lambda: all_succeeded(stack, fleet), timeout=90,
                 message=lambda: f"{stack.phases()}\n{stack.operator_output()[-2000:]}")
    assert watch.max_unfinished == 1
    assert watch.admission_order() == ["enterprise-60", "premium-20", "premium-40",
                                       "standard-30"]
    for name, yacht in yachts.items():
        status = stack.status(name)
        assert status["progress"]["percent"] == 100.0
        assert status["progress"]["done"] == fleet[name][1]
        assert status_counts(stack_db, yacht.id) == {"embedded": fleet[name][1]}
        complete = next(c for c in status["conditions"] if c["type"] == "Complete")
        assert complete["status"] == "True"
        wait_for(lambda n=name: sorted(e["reason"] for e in stack.events(n)) ==
                 ["Admitted", "Completed"], timeout=10,
                 message=lambda n=name: f"{[e['reason'] for e in stack.events(n)]}")


def slow_fleet(stack, stack_db, sizes: dict[str, int], priorities: dict[str, int] | None = None):
    """Backfills whose Jobs take a while: small batches against a provider with latency."""
    stack.fake.latency = 0.25
    yachts = {}
    for n, (name, rows) in enumerate(sizes.items()):
        yachts[name] = add_yacht(stack_db, name, "standard")
        add_rows(stack_db, yachts[name].id, rows, seed=n, max_chars=300)
        extra = {"priority": priorities[name]} if priorities and name in priorities else {}
        stack.apply(backfill(name, yachts[name].id, batchSize=5, batchSleepSeconds=0, **extra))
    return yachts


def no_claims(conn, yacht_id) -> dict[str, int] | None:
    """The yacht's status counts once no row is held by a worker, else None."""
    counts = status_counts(conn, yacht_id)
    return None if "processing" in counts else counts


def test_patching_priority_reorders_the_waiting_backfills(stack, stack_db):
    # a-first runs ~5 s (400 rows, 5 per 0.25 s request): long enough to patch around it.
    slow_fleet(stack, stack_db, {"a-first": 400, "b-second": 10, "c-third": 12},
               priorities={"a-first": 500})
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("a-first") == "Running", timeout=30)
    assert stack.status("b-second")["queuePosition"] == 1
    assert stack.status("c-third")["queuePosition"] == 2
    stack.api.patch("yachtbackfills", "c-third", {"spec": {"priority": 900}},
                    namespace="fleet")
    wait_for(lambda: stack.status("c-third").get("queuePosition") == 1, timeout=15)
    assert stack.status("b-second")["queuePosition"] == 2
    assert stack.status("c-third")["effectivePriority"] == 900
    assert stack.phases()["a-first"] == "Running"  # a running Job is never preempted
    wait_for(lambda: stack.phases().get("c-third") in ("Admitted", "Running", "Succeeded"),
             timeout=60)
    assert stack.phases()["b-second"] == "Queued"


def test_an_operator_killed_mid_run_creates_no_duplicate_job(stack, stack_db):
    names = {"one": 30, "two": 30, "three": 30}
    yachts = slow_fleet(stack, stack_db, names)
    stack.start_runner()
    with JobWatch(stack) as watch:
        stack.start_operator()
        wait_for(lambda: "Running" in stack.phases().values(), timeout=30)
        stack.stop_operator(signal.SIGKILL)
        stack.start_operator()
        wait_for(lambda: list(stack.phases().values()).count("Succeeded") >= 1, timeout=60)
        stack.stop_operator(signal.SIGKILL)
        stack.start_operator()
        wait_for(lambda: all_succeeded(stack, names), timeout=120,
                 message=lambda: f"{stack.phases()}\n{stack.operator_output()[-2000:]}")
    assert watch.max_unfinished == 1
    assert sorted(watch.admission_order()) == sorted(names)  # one Job per backfill, ever
    for name, yacht in yachts.items():
        assert status_counts(stack_db, yacht.id) == {"embedded": names[name]}


def test_the_next_backfill_is_admitted_when_a_job_completes_not_at_the_next_tick(
        stack, stack_db):
    """The timer is a minute: only the Job's completion event can admit the next one in
    time. Times are sampled every 20 ms from the emulator."""
    for n, name in enumerate(("first", "second", "third")):
        yacht = add_yacht(stack_db, name)
        add_rows(stack_db, yacht.id, 5, seed=n, max_chars=200)
        stack.apply(backfill(name, yacht.id, priority=100 - n, batchSleepSeconds=0,
                             embedding={"provider": "hash"}))
    stack.start_runner()
    completed: dict[str, float] = {}
    created: dict[str, float] = {}

    def sample() -> bool:
        now = time.monotonic()
        for job in stack.jobs():
            owner = job["metadata"]["ownerReferences"][0]["name"]
            created.setdefault(owner, now)
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Complete" and c["status"] == "True" for c in conditions):
                completed.setdefault(owner, now)
        return len(completed) == 3

    stack.start_operator(RECONCILE_INTERVAL_SEC="60", DRIFT_INTERVAL_SEC="60")
    wait_for(sample, timeout=60, interval=0.02,
             message=lambda: f"{stack.phases()}\n{stack.operator_output()[-2000:]}")
    assert created["second"] - completed["first"] < 2.0
    assert created["third"] - completed["second"] < 2.0


def test_suspend_stops_the_running_job_and_releases_its_rows(stack, stack_db):
    # 400 rows at 5 per request and 0.25 s each: ~5 s of work, so the suspend lands mid-run.
    yachts = slow_fleet(stack, stack_db, {"pausable": 400})
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("pausable") == "Running", timeout=30)
    wait_for(lambda: status_counts(stack_db, yachts["pausable"].id).get("embedded"),
             timeout=30)
    stack.api.patch("yachtbackfills", "pausable", {"spec": {"suspend": True}},
                    namespace="fleet")
    wait_for(lambda: stack.phases().get("pausable") == "Suspended", timeout=20)
    assert stack.unfinished_jobs() == []
    # The worker finishes its in-flight requests, releases the rest and exits.
    counts = wait_for(lambda: no_claims(stack_db, yachts["pausable"].id), timeout=20)
    assert 0 < counts.get("embedded", 0) < 400
    suspended = next(c for c in stack.status("pausable")["conditions"]
                     if c["type"] == "Suspended")
    assert suspended["status"] == "True"
    stack.fake.latency = 0.0
    stack.api.patch("yachtbackfills", "pausable", {"spec": {"suspend": False}},
                    namespace="fleet")
    wait_for(lambda: stack.phases().get("pausable") == "Succeeded", timeout=60)
    assert status_counts(stack_db, yachts["pausable"].id) == {"embedded": 400}
    wait_for(lambda: {"Suspended", "Resumed"} <= {e["reason"] for e in stack.events("pausable")},
             timeout=10)


def test_dead_letters_past_the_threshold_raise_dlq_growing_and_an_event(stack, stack_db):
    yacht = add_yacht(stack_db, "Leaky", "premium")
    texts = [f"row {n} about the bilge pump" for n in range(20)]
    texts += [f"POISON row {n}" for n in range(6)]
    add_rows(stack_db, yacht.id, len(texts), texts=texts)
    stack.fake.poison("POISON")
    stack.apply(backfill("leaky", yacht.id, batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator(DLQ_WARNING_THRESHOLD="5", DLQ_CRITICAL_THRESHOLD="50")
    wait_for(lambda: stack.phases().get("leaky") == "Succeeded", timeout=60)
    status = stack.status("leaky")
    assert status["dlq"]["unresolved"] == 6
    growing = next(c for c in status["conditions"] if c["type"] == "DLQGrowing")
    assert (growing["status"], growing["reason"]) == ("True", "AboveWarning")
    warnings = wait_for(lambda: [e for e in stack.events("leaky")
                                 if e["reason"] == "DLQGrowing"], timeout=10)
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


def test_a_stale_source_row_raises_drift_and_auto_requeue_re_embeds_it(stack, stack_db):
    yacht = add_yacht(stack_db, "Drifter", "standard")
    keys = add_rows(stack_db, yacht.id, 10, object_types=("work_order",))
    stack.apply(backfill("drifter", yacht.id, batchSleepSeconds=0,
                         drift={"toleranceMinutes": 10, "autoRequeue": True}))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("drifter") == "Succeeded", timeout=60)
    _, stale_id = keys[3]
    with stack_db.cursor() as cur:  # the work order changed long after it was projected
        cur.execute("UPDATE search_index SET updated_at = now() - interval '1 hour' "
                    "WHERE object_id = %s", (stale_id,))
        cur.execute("INSERT INTO pms_work_orders (id, yacht_id, title, updated_at) "
                    "VALUES (%s, %s, 'changed', now())", (stale_id, yacht.id))
    wait_for(lambda: any(e["reason"] == "Drift" for e in stack.events("drifter")), timeout=30)
    drift_event = next(e for e in stack.events("drifter") if e["reason"] == "Drift")
    assert drift_event["type"] == "Warning"
    assert "1 search_index rows" in drift_event["message"]
    wait_for(lambda: any(e["reason"] == "DriftRequeued" for e in stack.events("drifter")),
             timeout=30)
    # Re-admitted (autoRequeue opts in even in Once mode) and re-embedded.
    wait_for(lambda: stack.status("drifter").get("admissions") == 2
             and stack.phases()["drifter"] == "Succeeded", timeout=60)
    assert status_counts(stack_db, yacht.id) == {"embedded": 10}


def kubectl(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(stack.kubeconfig), *args],
                          capture_output=True, text=True, timeout=30, check=check)


def test_kubectl_get_yachtbackfills_lists_the_fleet_with_its_columns(stack, stack_db):
    yacht = add_yacht(stack_db, "Columned", "enterprise")
    add_rows(stack_db, yacht.id, 5)
    stack.apply(backfill("columned", yacht.id, yachtName="Columned", tier="enterprise",
                         batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("columned") == "Succeeded", timeout=60)
    out = kubectl(stack, "get", "yachtbackfills", "-n", "fleet").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "YACHT", "PRIORITY", "PHASE", "PROGRESS", "DLQ",
                              "QUEUE", "ETA", "AGE"]
    assert row.split()[:5] == ["columned", "Columned", "100", "Succeeded", "100"]
    short = kubectl(stack, "get", "yb", "-n", "fleet", "-o", "json").stdout
    assert [i["metadata"]["name"] for i in json.loads(short)["items"]] == ["columned"]


@pytest.mark.parametrize("spec, field", [
    ({"tier": "gold"}, "spec.tier"),
    ({"priority": 5000}, "spec.priority"),
    ({"yachtId": "not-a-uuid"}, "spec.yachtId"),
])
def test_kubectl_apply_of_a_bad_backfill_is_refused_naming_the_field(stack, spec, field,
                                                                    tmp_path):
    manifest = backfill("bad", "6a0c3b1e-1f0e-4c1a-9c53-2f1d8a6b9e10")
    manifest["spec"].update(spec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    result = kubectl(stack, "apply", "--validate=false", "-f", str(path), check=False)
    assert result.returncode != 0
    assert field in result.stderr
    assert stack.backfills() == {}


def test_deleting_a_backfill_removes_its_job_and_keeps_the_data(stack, stack_db):
    yachts = slow_fleet(stack, stack_db, {"doomed": 400})  # still running when deleted
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("doomed") == "Running", timeout=30)
    wait_for(lambda: status_counts(stack_db, yachts["doomed"].id).get("embedded"), timeout=30)
    stack.api.delete("yachtbackfills", "doomed", namespace="fleet")
    wait_for(lambda: stack.jobs() == [], timeout=30)
    counts = wait_for(lambda: no_claims(stack_db, yachts["doomed"].id), timeout=20)
    assert sum(counts.values()) == 400 and 0 < counts.get("embedded", 0) < 400
    time.sleep(1.0)
    assert stack.jobs() == []  # and the operator does not bring one back


def test_skipped_object_types_do_not_keep_a_once_backfill_running(stack, stack_db):
    yacht = add_yacht(stack_db, "Skipper", "standard")
    add_rows(stack_db, yacht.id, 20, object_types=("work_order", "email"))
    stack.apply(backfill("skipper", yacht.id, batchSleepSeconds=0, skipObjectTypes=["email"]))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("skipper") == "Succeeded", timeout=60)
    time.sleep(2.0)  # several ticks: no second Job for the pending emails
    assert len(stack.jobs()) == 1
    assert stack.phases()["skipper"] == "Succeeded"
    assert status_counts(stack_db, yacht.id) == {"embedded": 10, "pending": 10}


def test_a_failing_job_is_retried_then_the_backfill_fails_until_its_spec_changes(stack,
                                                                                  stack_db):
    yacht = add_yacht(stack_db, "Unlucky", "standard")
    add_rows(stack_db, yacht.id, 10)
    stack.fake.api_key = "sk-not-what-the-secret-holds"  # every worker exits 2 (auth)
    stack.apply(backfill("unlucky", yacht.id, batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator(JOB_BACKOFF_LIMIT="0", JOB_RETRIES="1")
    wait_for(lambda: stack.phases().get("unlucky") == "Failed", timeout=60,
             message=lambda: f"{stack.status('unlucky')}")
    status = stack.status("unlucky")
    assert (status["admissions"], status["failedJobs"]) == (2, 2)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded")
    # The Events follow the status write that made them.
    wait_for(lambda: [e["reason"] for e in stack.events("unlucky")].count(
        "BackoffLimitExceeded") == 1, timeout=10)
    assert [e["reason"] for e in stack.events("unlucky")].count("Retrying") == 1
    assert status_counts(stack_db, yacht.id) == {"queued": 10}  # nothing charged, nothing lost
    time.sleep(1.5)
    assert stack.status("unlucky")["admissions"] == 2  # Failed stays failed

    stack.fake.api_key = None  # the key is fixed; a spec change asks for a new start
    stack.api.patch("yachtbackfills", "unlucky", {"spec": {"batchSize": 50}},
                    namespace="fleet")
    wait_for(lambda: stack.phases().get("unlucky") == "Succeeded", timeout=60)
    assert status_counts(stack_db, yacht.id) == {"embedded": 10}
    assert stack.status("unlucky")["failedJobs"] == 0


def test_secrets_never_reach_crs_jobs_events_or_logs(stack, stack_db):
    password = "s3cr3t-pw-4e1f"  # trust auth ignores it, so it only has to be carried
    stack.database_url = stack.database_url.replace("postgres@", f"postgres:{password}@")
    stack.apply({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "f1backfill-database", "namespace": "fleet"},
                 "stringData": {"DATABASE_URL": stack.database_url}})
    yacht = add_yacht(stack_db, "Discreet", "premium")
    add_rows(stack_db, yacht.id, 12, texts=[f"row {n}" for n in range(11)] + ["POISON row"])
    stack.fake.poison("POISON")  # a dead letter: its error text goes to an Event path too
    stack.apply(backfill("discreet", yacht.id, batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator(LOG_LEVEL="DEBUG")
    wait_for(lambda: stack.phases().get("discreet") == "Succeeded", timeout=60)
    visible = json.dumps([stack.backfills(), stack.jobs(), stack.events()])
    logs = stack.operator_output() + "".join(
        path.read_text() for path in (stack.workdir / "jobs").glob("*.log"))
    for secret in (password, "sk-e2e"):
        assert secret not in visible
        assert secret not in logs
    job = stack.jobs()[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"DATABASE_URL", "OPENAI_API_KEY", "REDIS_URL"} <= {e["name"] for e in job["env"]}
    assert all("value" not in e for e in job["env"]
               if e["name"] in ("DATABASE_URL", "OPENAI_API_KEY", "REDIS_URL"))
    assert password not in " ".join(job["command"] + job.get("args", []))


def test_kubectl_wait_for_complete_returns_for_a_yacht_without_rows(stack, stack_db):
    yacht = add_yacht(stack_db, "Empty")
    stack.apply(backfill("empty", yacht.id, mode="Once"))
    stack.start_operator()
    result = kubectl(stack, "wait", "--for=condition=Complete", "yb/empty", "-n", "fleet",
                     "--timeout=30s", check=False)
    assert result.returncode == 0, result.stderr + stack.operator_output()
    status = stack.status("empty")
    assert (status["phase"], status["progress"]["total"]) == ("Succeeded", 0)
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["reason"] == "NoRows"
    assert stack.jobs() == []


def test_a_second_backfill_of_a_yacht_is_told_which_one_handles_it(stack, stack_db):
    yacht = add_yacht(stack_db, "Twice")
    add_rows(stack_db, yacht.id, 10)
    stack.apply(backfill("first", yacht.id))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.status("first").get("phase") in ("Admitted", "Running",
                                                           "Succeeded"), 20)
    stack.apply(backfill("second", yacht.id, tier="enterprise"))
    expected = f"yacht {yacht.id} is handled by YachtBackfill fleet/first"

    def told() -> bool:
        events = [e for e in stack.events("second") if e["reason"] == "DuplicateYacht"]
        return bool(events) and events[0]["type"] == "Warning" and \
            events[0]["message"] == expected

    wait_for(told, 20, message=stack.operator_output)
    status = stack.status("second")
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert (status["phase"], admitted["status"], admitted["reason"], admitted["message"]) == (
        "Pending", "False", "DuplicateYacht", expected)
    wait_for(lambda: stack.status("first").get("phase") == "Succeeded", 60)
    assert {j["metadata"]["labels"]["f1cortex.io/backfill"] for j in stack.jobs()} == {"first"}
    assert stack.status("second")["phase"] == "Pending"
