"""Migrations: versioned, idempotent, safe when several run at once; the DLQ trigger; HOT
status changes."""

from __future__ import annotations

import threading

import psycopg2

from f1backfill.db import query
from f1backfill.db.migrate import available, migrate
from f1backfill.worker.queue import Queue
from tests.support.fleet import add_rows, add_yacht


def test_migrate_twice_applies_nothing_the_second_time(pg_server):
    url = pg_server.create_database("migrate_twice")
    assert migrate(url) == [m.version for m in available()]
    assert migrate(url) == []


def test_concurrent_migrations_apply_each_version_once(pg_server):
    url = pg_server.create_database("migrate_concurrently")
    results, errors = [], []

    def run() -> None:
        try:
            results.append(migrate(url))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], [m.version for m in available()]]
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone()[0] == len(available())
    conn.close()


def test_the_vector_dimension_is_a_migration_setting(pg_server):
    url = pg_server.create_database("migrate_dims")
    migrate(url, dimensions=256)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'search_index'::regclass AND attname = 'embedding'")
        assert cur.fetchone()[0] == "vector(256)"
    conn.close()


def test_dlq_trigger_files_the_failing_row_from_new(db):
    """Re-reading the row being updated would see the old attempt count: NEW is filed."""
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 1, texts=["x" * 800])
    with db.cursor() as cur:
        cur.execute(
            "UPDATE search_index SET embedding_status = 'failed', embedding_attempts = 5, "
            "payload = payload || '{\"last_error\": \"boom\", \"last_error_code\": \"timeout\"}'")
        cur.execute("SELECT embedding_status FROM search_index")
        assert cur.fetchone()[0] == "dlq"
        cur.execute("SELECT error_code, error_message, attempts, length(search_text_sample), "
                    "resolved_at FROM embedding_dlq")
        assert cur.fetchone() == ("timeout", "boom", 5, 500, None)
        # Failing again updates the same entry and re-opens it.
        cur.execute("UPDATE embedding_dlq SET resolved_at = now(), resolution_type = 'abandoned'")
        cur.execute("UPDATE search_index SET embedding_status = 'failed', embedding_attempts = 6")
        cur.execute("SELECT count(*), max(attempts), bool_and(resolved_at IS NULL) "
                    "FROM embedding_dlq")
        assert cur.fetchone() == (1, 6, True)


def test_a_rows_status_changes_are_hot_updates(db, database_url):
    """004: no index holds embedding_status and pages keep room, so a row on its way to an
    embedding (queued, processing, embedded) writes no new index entry: the primary key's
    random UUIDs would otherwise spread a yacht's writes over the whole fleet's index."""
    with db.cursor() as cur:
        cur.execute("SELECT reloptions FROM pg_class WHERE relname = 'search_index'")
        assert "fillfactor=70" in cur.fetchone()[0]
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'search_index'")
        indexes = [row[0] for row in cur.fetchall()]
    assert not [i for i in indexes if "embedding_status" in i], indexes
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 20)
    queue = Queue(database_url, str(yacht.id), "hot-test", 300)
    try:
        queue.enqueue_pending()
        counts = ("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                  "WHERE relname = 'search_index'")  # this backend's, not yet flushed
        with queue.conn, queue.conn.cursor() as cur:
            cur.execute(counts)
            updates, hot = cur.fetchone()
            cur.execute(query("claim_batch"), {"yacht_id": yacht.id, "worker": "hot-test",
                                               "lease_seconds": 300.0, "limit": 5})
            assert len(cur.fetchall()) == 5
            cur.execute(counts)
            assert cur.fetchone() == (updates + 5, hot + 5)  # the claim's five, all HOT
    finally:
        queue.close()
