"""The search cache's per-yacht generations, end to end: the workers bump after each batch
(REDIS_URL from the Secret the operator names in the Job), the operator once when a Job
ends, never again on later ticks or after a restart; a Redis that is away costs a count
and one log line, never a backfill."""

from __future__ import annotations

import socket
import urllib.request

from f1sandbox.fake_cloudflare import FakeCloudflare
from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.stack import REDIS_SECRET, backfill, running_stack
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def succeeded(stack, name: str) -> bool:
    return stack.phases().get(name) == "Succeeded"


def test_workers_bump_per_batch_and_the_operator_once_per_job(stack, stack_db, monkeypatch):
    # One lane: claims of 10 rows each (concurrent lanes may split the last ones).
    monkeypatch.setenv("MAX_IN_FLIGHT", "1")  # the job runner passes its environment on
    yacht = add_yacht(stack_db, "Cached", "premium")
    add_rows(stack_db, yacht.id, 30, max_chars=400)
    stack.apply(backfill("cached", yacht.id, batchSize=10, batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: succeeded(stack, "cached"), timeout=60,
             message=lambda: f"{stack.phases()}\n{stack.operator_output()[-2000:]}")
    (job,) = stack.jobs()
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"] == {"name": "REDIS_URL", "valueFrom": {
        "secretKeyRef": {"name": REDIS_SECRET, "key": "REDIS_URL"}}}
    assert status_counts(stack_db, yacht.id) == {"embedded": 30}
    # Three batches of 10 (the worker), then the Job's end (the operator).
    assert stack.generation(yacht.id) == 3 + 1


def test_a_jobs_end_bumps_once_across_ticks_and_restarts(pg_server, redis_url, tmp_path):
    # Workers without Redis: every bump seen here is the operator's.
    with running_stack(pg_server, tmp_path, redis_url=redis_url,
                       WORKER_REDIS_SECRET="") as stack:
        import psycopg2

        db = psycopg2.connect(stack.database_url)
        db.autocommit = True
        try:
            first, second = add_yacht(db, "First"), add_yacht(db, "Second")
            add_rows(db, first.id, 20, max_chars=400)
            add_rows(db, second.id, 20, seed=2, max_chars=400)
            stack.apply(backfill("first", first.id, batchSize=5, batchSleepSeconds=0))
            stack.start_runner()
            stack.start_operator()
            wait_for(lambda: succeeded(stack, "first"), timeout=60,
                     message=lambda: stack.operator_output()[-2000:])
            assert "REDIS_URL" not in str(stack.jobs())
            assert stack.generation(first.id) == 1
            # A restarted operator reads the stored status: the end is not news any more.
            stack.stop_operator()
            stack.start_operator()
            # The second backfill's whole run takes many ticks of the new operator.
            stack.apply(backfill("second", second.id, batchSleepSeconds=0))
            wait_for(lambda: succeeded(stack, "second"), timeout=60,
                     message=lambda: stack.operator_output()[-2000:])
            assert stack.generation(first.id) == 1
            assert stack.generation(second.id) == 1
            assert f"cache generation of yacht {second.id} is now 1" in stack.operator_output()
        finally:
            db.close()


def test_an_operator_whose_redis_is_away_completes_the_backfill_and_counts(
        pg_server, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    port = free_port()
    with running_stack(pg_server, tmp_path, OPERATOR_METRICS_PORT=str(port),
                       REDIS_URL=nowhere) as stack:
        import psycopg2

        db = psycopg2.connect(stack.database_url)
        db.autocommit = True
        try:
            yacht = add_yacht(db, "Uncached")
            add_rows(db, yacht.id, 10, max_chars=400)
            stack.apply(backfill("uncached", yacht.id, batchSleepSeconds=0))
            stack.start_runner()
            stack.start_operator()
            wait_for(lambda: succeeded(stack, "uncached"), timeout=60,
                     message=lambda: stack.operator_output()[-2000:])
            assert status_counts(db, yacht.id) == {"embedded": 10}
        finally:
            db.close()

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return page.read().decode()

        wait_for(lambda: "f1_cache_generation_bump_failures_total 1.0" in scraped(),
                 timeout=10, message=lambda: scraped()[-3000:])
        assert stack.operator_output().count("cannot bump cache generations") == 1


def test_the_edge_kv_ends_with_the_generation_redis_has(pg_server, redis_url, tmp_path):
    # The workers' token comes from the Secret the operator names; the operator has its own.
    with FakeCloudflare(token="cf-e2e-s3cret") as cloudflare, running_stack(
            pg_server, tmp_path, redis_url=redis_url,
            CLOUDFLARE_ACCOUNT_ID=cloudflare.account,
            CLOUDFLARE_KV_NAMESPACE_ID=cloudflare.namespace,
            CLOUDFLARE_API_TOKEN="cf-e2e-s3cret", CLOUDFLARE_API_BASE_URL=cloudflare.base_url,
            WORKER_CLOUDFLARE_SECRET="f1backfill-cloudflare") as stack:
        stack.api.apply({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "f1backfill-cloudflare", "namespace": "fleet"},
                         "stringData": {"CLOUDFLARE_API_TOKEN": "cf-e2e-s3cret"}})
        import psycopg2

        db = psycopg2.connect(stack.database_url)
        db.autocommit = True
        try:
            yacht = add_yacht(db, "Edge")
            add_rows(db, yacht.id, 30, max_chars=400)
            stack.apply(backfill("edge", yacht.id, batchSize=10, batchSleepSeconds=0))
            stack.start_runner()
            stack.start_operator()
            wait_for(lambda: succeeded(stack, "edge"), timeout=60,
                     message=lambda: stack.operator_output()[-2000:])
            generation = stack.generation(yacht.id)
            assert generation >= 2  # the workers' batches, then the operator's Job end
            key = f"gen:{yacht.id}"
            wait_for(lambda: cloudflare.value(cloudflare.namespace, key) == str(generation),
                     timeout=10, message=lambda: f"{cloudflare.writes}")
            writes = [w for w in cloudflare.writes if w.key == key]
            assert all(w.authorized for w in writes)
            # The first batch's bump is a worker's; the last value, the operator's.
            assert writes[0].value == "1" and writes[-1].value == str(generation), writes
            (job,) = stack.jobs()
            assert "cf-e2e-s3cret" not in str(job)
            assert "cf-e2e-s3cret" not in stack.operator_output()
        finally:
            db.close()
