"""The embedding worker against real Postgres and the fake OpenAI server (real SDK).

Each test owns a database (conftest) and a fake provider; the worker runs in-process
unless the test is about processes and signals (test_worker_process.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request

import pytest

from f1backfill.config import WorkerSettings
from f1backfill.generations import BUMP_FAILURES_METRIC, Generations
from f1backfill.worker.loop import Worker
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.waiting import wait_for


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def settings_for(database_url: str, yacht, fake: FakeOpenAI, **overrides) -> WorkerSettings:
    values = dict(
        yacht_id=str(yacht.id), database_url=database_url, provider="openai",
        openai_api_key="sk-test", openai_base_url=fake.base_url, prometheus_port=0,
        batch_sleep_sec=0.0, retry_backoff_sec=0.01, request_timeout_sec=5.0)
    values.update(overrides)
    return WorkerSettings.from_env({}, **values)


def run_worker(database_url, yacht, fake, **overrides):
    worker = Worker(settings_for(database_url, yacht, fake, **overrides))
    return worker, worker.run()


def dlq_rows(db, yacht):
    with db.cursor() as cur:
        cur.execute("SELECT error_code, attempts, search_text_sample, resolved_at "
                    "FROM embedding_dlq WHERE yacht_id = %s ORDER BY error_code", (yacht.id,))
        return cur.fetchall()


def test_drains_the_queue_into_pgvector_and_exits_zero(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 250)
    _, summary = run_worker(database_url, yacht, fake, batch_size=100, max_in_flight=1)
    assert summary.exit_code == 0
    assert summary.embedded == 250
    assert status_counts(db, yacht.id) == {"embedded": 250}
    with db.cursor() as cur:
        cur.execute("SELECT vector_dims(embedding), round((embedding <#> embedding)::numeric, 3) "
                    "FROM search_index WHERE yacht_id = %s LIMIT 1", (yacht.id,))
        dims, negative_norm = cur.fetchone()
        cur.execute("SELECT status, count(*) FROM embedding_jobs GROUP BY 1")
        jobs = dict(cur.fetchall())
    assert dims == 1536
    assert negative_norm == -1  # unit vectors stored as sent
    with db.cursor() as cur:  # what a search must embed its query with
        cur.execute("SELECT DISTINCT embedding_provider, embedding_model FROM search_index")
        assert cur.fetchall() == [("openai", "text-embedding-3-small")]
    assert jobs == {"done": 250}
    stats = fake.stats()
    assert stats.requests == 3  # many rows per request: 100 + 100 + 50
    assert stats.inputs_served == 250


def test_only_the_yachts_own_rows_are_embedded(db, database_url, fake):
    mine, other = add_yacht(db, "Mine"), add_yacht(db, "Other")
    add_rows(db, mine.id, 20)
    add_rows(db, other.id, 30, seed=2)
    run_worker(database_url, mine, fake)
    assert status_counts(db, mine.id) == {"embedded": 20}
    assert status_counts(db, other.id) == {"pending": 30}


def test_enqueue_is_idempotent(db, database_url, fake):
    from f1backfill.worker.queue import Queue

    yacht = add_yacht(db)
    add_rows(db, yacht.id, 40)
    queue = Queue(database_url, str(yacht.id), "test", 60)
    try:
        assert queue.enqueue_pending() == 40
        assert queue.enqueue_pending() == 0
    finally:
        queue.close()
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM embedding_jobs")
        assert cur.fetchone()[0] == 40


def test_concurrent_workers_never_embed_a_row_twice(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 600)
    with FakeOpenAI(latency=0.02) as fake:
        workers = [Worker(settings_for(database_url, yacht, fake, batch_size=25,
                                       worker_name=f"w{n}", max_in_flight=3))
                   for n in range(3)]
        threads = [threading.Thread(target=w.run) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stats = fake.stats()
    assert sum(w.summary.embedded for w in workers) == 600
    assert all(w.summary.embedded > 0 for w in workers)  # they really shared the queue
    assert stats.inputs_served == 600  # each row sent to the provider exactly once
    assert status_counts(db, yacht.id) == {"embedded": 600}
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (object_type, object_id)) "
                    "FROM embedding_jobs WHERE status = 'done'")
        assert cur.fetchone() == (600, 600)


def test_a_429_storm_dead_letters_nothing_and_charges_no_attempt(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 200, max_chars=400)
    # The account is far smaller than the worker was told (600/min, a 5-request burst,
    # against the default 3000/min): until the rate-limit headers correct its pacing the
    # worker may run into real 429s; the provider also refuses three requests outright.
    with FakeOpenAI(rpm=600, tpm=2_000_000, burst_seconds=0.5) as fake:
        fake.fail_next(3, "429")
        _, summary = run_worker(database_url, yacht, fake, batch_size=10, max_attempts=1)
        stats = fake.stats()
    assert summary.exit_code == 0
    assert status_counts(db, yacht.id) == {"embedded": 200}
    assert dlq_rows(db, yacht) == []
    assert stats.rate_limited >= 3
    with db.cursor() as cur:
        cur.execute("SELECT max(embedding_attempts) FROM search_index")
        assert cur.fetchone()[0] == 0


def test_a_poisoned_row_among_99_good_ones_is_isolated(db, database_url, fake):
    yacht = add_yacht(db)
    texts = [f"good row number {n} about the watermaker" for n in range(99)]
    texts.insert(37, "this one carries POISON-PILL and the provider refuses it")
    add_rows(db, yacht.id, 100, texts=texts)
    fake.poison("POISON-PILL")
    # One lane: the 100 rows travel as one request, which bisection then splits.
    _, summary = run_worker(database_url, yacht, fake, batch_size=100, max_in_flight=1)
    assert summary.embedded == 99
    assert status_counts(db, yacht.id) == {"embedded": 99, "dlq": 1}
    (code, _attempts, sample, _resolved), = dlq_rows(db, yacht)
    assert code == "invalid_input"
    assert "POISON-PILL" in sample
    # Bisection: 1 + 2 * log2(100) requests at most, not one per row.
    assert fake.stats().requests <= 1 + 2 * 7


def test_rows_out_of_attempts_are_dead_lettered_with_the_error_code(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 10)
    fake.fail_next(1000, "503")
    _, summary = run_worker(database_url, yacht, fake, max_attempts=3,
                            circuit_breaker_threshold=100, max_in_flight=1)
    assert summary.exit_code == 0
    assert status_counts(db, yacht.id) == {"dlq": 10}
    rows = dlq_rows(db, yacht)
    assert {code for code, *_ in rows} == {"provider_error"}
    assert {attempts for _, attempts, *_ in rows} == {3}
    assert fake.stats().requests == 3


def test_timeouts_are_retried_then_dead_lettered_as_timeout(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 5)
    fake.hang_seconds = 2.0
    fake.fail_next(2, "timeout")
    # One lane: the five rows travel as one request, which times out twice.
    run_worker(database_url, yacht, fake, max_attempts=2, request_timeout_sec=0.3,
               circuit_breaker_threshold=100, max_in_flight=1)
    assert status_counts(db, yacht.id) == {"dlq": 5}
    assert {code for code, *_ in dlq_rows(db, yacht)} == {"timeout"}


def test_transient_faults_are_retried_until_the_rows_embed(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 30)
    fake.fail_next(1, "500")
    fake.fail_next(1, "malformed")
    fake.fail_next(1, "missing_data")
    run_worker(database_url, yacht, fake, max_attempts=5, circuit_breaker_threshold=100)
    assert status_counts(db, yacht.id) == {"embedded": 30}
    with db.cursor() as cur:
        cur.execute("SELECT max(embedding_attempts) FROM search_index")
        assert cur.fetchone()[0] == 0  # reset on success


def test_the_breaker_opens_after_consecutive_failures_and_recovers(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 20)
    fake.fail_next(3, "503")
    worker = Worker(settings_for(database_url, yacht, fake, circuit_breaker_threshold=3,
                                 circuit_breaker_reset_sec=0.5, max_attempts=10,
                                 max_in_flight=1))
    states = []
    original = worker._breaker_changed
    worker.breaker._on_change = lambda s: (states.append(s.name), original(s))
    summary = worker.run()
    assert summary.exit_code == 0
    assert states == ["OPEN", "HALF_OPEN", "CLOSED"]
    assert status_counts(db, yacht.id) == {"embedded": 20}
    assert worker.metrics.breaker_state._value.get() == 0


def test_wrong_dimension_vectors_go_to_the_dead_letter_table_at_once(db, database_url, fake):
    yacht = add_yacht(db)
    texts = [f"row {n} with a normal text" for n in range(9)] + ["row with BENT-VECTOR text"]
    add_rows(db, yacht.id, 10, texts=texts)
    fake.wrong_dimension_for("BENT-VECTOR")
    run_worker(database_url, yacht, fake)
    assert status_counts(db, yacht.id) == {"embedded": 9, "dlq": 1}
    ((code, *_),) = dlq_rows(db, yacht)
    assert code == "wrong_dimension"


def test_text_empty_after_cleaning_is_dead_lettered_without_a_request(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 3, texts=["\x07 \x1b", "   ", "fine text"])
    run_worker(database_url, yacht, fake)
    assert status_counts(db, yacht.id) == {"embedded": 1, "dlq": 2}
    assert {code for code, *_ in dlq_rows(db, yacht)} == {"empty_text"}
    assert fake.stats().inputs_served == 1


def test_long_text_is_cut_to_max_embedding_chars(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 1, texts=["word " * 5000])
    run_worker(database_url, yacht, fake, max_embedding_chars=1000)
    assert fake.stats().tokens_served <= 1000 // 5 + 1


def test_skipped_object_types_are_left_pending(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 10, object_types=("email", "document"))
    run_worker(database_url, yacht, fake, skip_object_types=("email",))
    with db.cursor() as cur:
        cur.execute("SELECT object_type, embedding_status, count(*) FROM search_index "
                    "GROUP BY 1, 2 ORDER BY 1")
        assert cur.fetchall() == [("document", "embedded", 5), ("email", "pending", 5)]


def test_a_redead_lettered_row_that_then_embeds_resolves_its_dlq_entry(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 4)
    fake.fail_next(1, "503")
    run_worker(database_url, yacht, fake, max_attempts=1, circuit_breaker_threshold=100,
               max_in_flight=1)
    assert status_counts(db, yacht.id) == {"dlq": 4}
    with db.cursor() as cur:  # what `dlq retry` will do: back to pending, attempts reset
        cur.execute("UPDATE search_index SET embedding_status = 'pending', "
                    "embedding_attempts = 0")
    run_worker(database_url, yacht, fake)
    assert status_counts(db, yacht.id) == {"embedded": 4}
    assert {resolved is not None for *_, resolved in dlq_rows(db, yacht)} == {True}
    with db.cursor() as cur:
        cur.execute("SELECT DISTINCT resolution_type FROM embedding_dlq")
        assert cur.fetchall() == [("retry_success",)]


def test_auth_failure_stops_the_worker_and_charges_no_row(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 10)
    with FakeOpenAI(api_key="sk-right") as fake:
        worker = Worker(settings_for(database_url, yacht, fake, openai_api_key="sk-wrong"))
        summary = worker.run()
    assert summary.exit_code == 2
    assert status_counts(db, yacht.id) == {"queued": 10}
    assert dlq_rows(db, yacht) == []


def test_health_and_metrics_answer_on_one_port(db, database_url, fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 30)
    worker = Worker(settings_for(database_url, yacht, fake, prometheus_port=0,
                                 idle_timeout_sec=30))
    from f1backfill.worker.health import HealthServer

    server = HealthServer(worker.health, 0, host="127.0.0.1")
    server.start()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: status_counts(db, yacht.id) == {"embedded": 30}, timeout=30)
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/health") as response:
            assert response.status == 200
            assert b'"healthy"' in response.read()
        with urllib.request.urlopen(f"{base}/metrics") as response:
            text = response.read().decode()
        for name in ("f1_embeddings_processed_total", "f1_openai_requests_total",
                     "f1_embedding_queue_depth", "f1_circuit_breaker_state",
                     "f1_worker_memory_mb", "f1_embedding_latency_seconds",
                     "f1_batch_processing_seconds"):
            assert name in text
        assert f'f1_embeddings_processed_total{{status="success",yacht_id="{yacht.id}"}} 30.0' \
            in text
        worker.health.breaker_open = True
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/health")
        assert refused.value.code == 503
        assert b"circuit_open" in refused.value.read()
    finally:
        worker.terminate()
        thread.join(timeout=30)
        server.stop()


def test_a_changed_text_is_not_overwritten_by_a_stale_embedding(db, database_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 1, texts=["original text about the gyro stabiliser"])
    with FakeOpenAI(latency=1.0) as fake:
        worker = Worker(settings_for(database_url, yacht, fake))
        thread = threading.Thread(target=worker.run)
        thread.start()
        wait_for(lambda: fake.stats().requests == 1, timeout=10)
        with db.cursor() as cur:  # the projection rewrites the text mid-request
            cur.execute("UPDATE search_index SET search_text = 'rewritten text'")
        thread.join(timeout=30)
    assert status_counts(db, yacht.id) == {"pending": 1}  # the next enqueue embeds it
    with db.cursor() as cur:
        cur.execute("SELECT embedding IS NULL FROM search_index")
        assert cur.fetchone()[0] is True


def test_rows_of_a_batch_whose_write_fails_go_back_to_the_queue_uncharged(db, database_url,
                                                                           fake):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 30)
    with db.cursor() as cur:  # the database refuses the batch's write, as a full disk would
        cur.execute("""
            CREATE FUNCTION refuse_embeddings() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
            CREATE TRIGGER refuse_embeddings BEFORE UPDATE OF embedding ON search_index
            FOR EACH ROW EXECUTE FUNCTION refuse_embeddings();""")
    with pytest.raises(Exception, match="disk full"):
        run_worker(database_url, yacht, fake, batch_size=30, max_in_flight=1,
                   lease_timeout_sec=3600)
    with db.cursor() as cur:
        cur.execute("SELECT j.status, j.claimed_by, si.embedding_status, si.embedding_attempts "
                    "FROM embedding_jobs j JOIN search_index si USING (object_type, object_id)")
        rows = cur.fetchall()
    assert len(rows) == 30
    # Not left 'processing' under a lease (an hour here), which would charge an attempt.
    assert set(rows) == {("queued", None, "queued", 0)}


# --- The search cache's generation -----------------------------------------------------------


def generation(redis_url: str, yacht) -> int:
    with Generations(redis_url) as generations:
        return generations.read(str(yacht.id))


def test_each_batch_that_stored_embeddings_bumps_the_yachts_generation(
        db, database_url, fake, redis_url):
    yacht, other = add_yacht(db), add_yacht(db, "Other")
    add_rows(db, yacht.id, 250)
    add_rows(db, other.id, 5, seed=2)
    _, summary = run_worker(database_url, yacht, fake, batch_size=100, max_in_flight=1,
                            redis_url=redis_url)
    assert (summary.exit_code, summary.embedded, summary.batches) == (0, 250, 3)
    assert generation(redis_url, yacht) == 3  # 100 + 100 + 50: one bump per batch
    assert generation(redis_url, other) == 0


def test_concurrent_lanes_bump_once_per_batch(db, database_url, fake, redis_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 120)
    _, summary = run_worker(database_url, yacht, fake, batch_size=10, max_in_flight=4,
                            redis_url=redis_url)
    assert summary.embedded == 120 and summary.batches >= 12
    assert generation(redis_url, yacht) == summary.batches


def test_a_batch_that_stored_no_embedding_bumps_nothing(db, database_url, fake, redis_url):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 2, texts=["\x07 \x1b", "   "])  # dead-lettered without a request
    _, summary = run_worker(database_url, yacht, fake, redis_url=redis_url)
    assert (summary.batches, summary.embedded, summary.dead_lettered) == (1, 0, 2)
    assert generation(redis_url, yacht) == 0


def test_a_worker_whose_redis_is_away_embeds_everything_and_counts_the_failed_bumps(
        db, database_url, fake, caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        nowhere = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 40)
    caplog.set_level(logging.INFO, logger="f1backfill.generations")
    worker, summary = run_worker(database_url, yacht, fake, batch_size=10, max_in_flight=2,
                                 redis_url=nowhere)
    assert (summary.exit_code, summary.embedded, summary.batches) == (0, 40, 4)
    assert status_counts(db, yacht.id) == {"embedded": 40}
    assert worker.metrics.registry.get_sample_value(BUMP_FAILURES_METRIC) == 4
    warnings = [r for r in caplog.records if r.name == "f1backfill.generations"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
