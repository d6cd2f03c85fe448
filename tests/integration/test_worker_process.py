"""The worker as a Job runs it: a real process, killed and terminated by signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import redis

from f1sandbox.fake_cloudflare import FakeCloudflare
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.waiting import wait_for


def start_worker(database_url: str, yacht, fake: FakeOpenAI, **env: str) -> subprocess.Popen:
    environment = {
        **os.environ, "DATABASE_URL": database_url, "YACHT_ID": str(yacht.id),
        "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.base_url, "PROMETHEUS_PORT": "0", "BATCH_SLEEP_SEC": "0",
        "LOG_LEVEL": "INFO", **env}
    return subprocess.Popen([sys.executable, "-m", "f1backfill.cli", "worker"],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def job_states(db) -> dict[str, int]:
    with db.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM embedding_jobs GROUP BY 1")
        return dict(cur.fetchall())


def test_a_worker_killed_mid_batch_loses_no_row_and_its_rows_are_reclaimed(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 100)
    with FakeOpenAI(latency=3.0) as fake:
        victim = start_worker(database_url, yacht, fake, BATCH_SIZE="20", MAX_IN_FLIGHT="2",
                              LEASE_TIMEOUT_SEC="2")
        wait_for(lambda: fake.stats().requests >= 2, timeout=20)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        held = status_counts(db, yacht.id).get("processing", 0)
        assert held == 40  # two batches were in flight when it died
        time.sleep(2.2)  # let the dead worker's leases run out
        fake.latency = 0.0
        survivor = start_worker(database_url, yacht, fake, LEASE_TIMEOUT_SEC="30")
        output, _ = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, output
    assert "reclaimed 40 rows" in output
    assert status_counts(db, yacht.id) == {"embedded": 100}
    assert job_states(db) == {"done": 100}
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM embedding_jobs WHERE last_error_code = 'lease_expired'")
        assert cur.fetchone()[0] == 40


def test_sigterm_releases_claims_and_exits_promptly(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 200)
    with FakeOpenAI(latency=1.5) as fake:
        worker = start_worker(database_url, yacht, fake, BATCH_SIZE="20", MAX_IN_FLIGHT="3")
        wait_for(lambda: fake.stats().requests >= 3, timeout=20)
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
        took = time.monotonic() - asked
    assert worker.returncode == 143, output
    assert took < 5, f"took {took:.1f}s to stop"
    counts = status_counts(db, yacht.id)
    assert "processing" not in counts
    assert counts.get("embedded", 0) + counts.get("queued", 0) == 200
    assert job_states(db).get("processing") is None
    with db.cursor() as cur:
        cur.execute("SELECT max(embedding_attempts) FROM search_index")
        assert cur.fetchone()[0] == 0  # a release is not a failure


def test_an_empty_queue_exits_zero_at_once(db, database_url):
    yacht = add_yacht(db)
    with FakeOpenAI() as fake:
        worker = start_worker(database_url, yacht, fake)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output


def test_a_worker_whose_redis_is_away_exits_zero_having_embedded_everything(
        db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 60)
    with FakeOpenAI() as fake:
        worker = start_worker(database_url, yacht, fake, BATCH_SIZE="10",
                              REDIS_URL="unix:///nonexistent/redis.sock")
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert status_counts(db, yacht.id) == {"embedded": 60}
    # Six batches, six failed bumps, one line about it.
    assert output.count("cannot bump cache generations") == 1, output
    assert "Traceback" not in output


def test_a_redis_url_is_never_logged(db, database_url, redis_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 5)
    password_url = redis_url.replace("unix://", "unix://:hunter2@")
    with FakeOpenAI() as fake:
        worker = start_worker(database_url, yacht, fake, REDIS_URL=password_url,
                              LOG_LEVEL="DEBUG")
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert "hunter2" not in output


@pytest.mark.parametrize("env, named", [
    ({"YACHT_ID": "not-a-uuid"}, "YACHT_ID"),
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
    ({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
])
def test_bad_settings_fail_fast_naming_the_setting(db, database_url, env, named):
    yacht = add_yacht(db)
    with FakeOpenAI() as fake:
        worker = start_worker(database_url, yacht, fake, **env)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 2
    assert named in output
    assert "Traceback" not in output


def test_an_unreachable_database_is_reported_without_its_password(db, database_url):
    yacht = add_yacht(db)
    with FakeOpenAI() as fake:
        worker = start_worker(
            database_url, yacht, fake,
            DATABASE_URL="postgresql://app:s3cret-pw@127.0.0.1:1/nowhere")
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 2
    assert "cannot connect to the database" in output
    assert "s3cret-pw" not in output


def test_a_worker_publishes_its_yachts_last_generation_to_the_edge(db, database_url,
                                                                    redis_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 30)
    with FakeOpenAI() as fake, FakeCloudflare(token="cf-hunter2") as cloudflare:
        worker = start_worker(
            database_url, yacht, fake, BATCH_SIZE="10", LOG_LEVEL="DEBUG", REDIS_URL=redis_url,
            CLOUDFLARE_ACCOUNT_ID=cloudflare.account,
            CLOUDFLARE_KV_NAMESPACE_ID=cloudflare.namespace,
            CLOUDFLARE_API_TOKEN="cf-hunter2", CLOUDFLARE_API_BASE_URL=cloudflare.base_url)
        output, _ = worker.communicate(timeout=60)
        published = cloudflare.value(cloudflare.namespace, f"gen:{yacht.id}")
    assert worker.returncode == 0, output
    in_redis = redis.Redis.from_url(redis_url).get(f"f1:gen:{yacht.id}")
    # One bump per batch that stored embeddings (30 rows in batches of 10: three, or more
    # when the lanes' claims split them); whatever the one-write-a-second limit held back
    # was written as the worker exited: the edge ends where Redis does.
    batches = int(re.search(r"finished: RunSummary\(.*batches=(\d+)", output).group(1))
    assert batches >= 3
    assert in_redis == str(batches).encode() and published == str(batches), output
    assert "cf-hunter2" not in output
