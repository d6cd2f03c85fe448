"""The worker's look at what is left of its yacht's queue (`Queue.state`): its figures, and
that it reads the partial indexes of its two statuses instead of the whole queue table,
which holds the fleet's queue and every done job (docs/benchmarks.md, queue_scale)."""

from __future__ import annotations

import pytest

from f1backfill.db import query
from f1backfill.worker.queue import Queue
from tests.support.fleet import add_rows, add_yacht


@pytest.fixture
def queue(database_url, db):
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 30)
    other = add_yacht(db, "Other")
    add_rows(db, other.id, 40, seed=2)
    Queue(database_url, str(other.id), "other-worker", 300).enqueue_pending()
    mine = Queue(database_url, str(yacht.id), "test-worker", 300)
    mine.enqueue_pending()
    yield mine
    mine.close()


def test_the_state_counts_the_yachts_own_queued_processing_and_ready_rows(queue, db):
    claimed = queue.claim(10)
    queue.release(claimed[:4])  # back at once, ready
    with db.cursor() as cur:  # two rows backing off for a minute
        cur.execute("UPDATE embedding_jobs SET available_at = now() + interval '60 seconds' "
                    "WHERE id IN (SELECT id FROM embedding_jobs WHERE yacht_id = %s AND "
                    "status = 'queued' ORDER BY id LIMIT 2)", (queue.yacht_id,))
    state = queue.state()
    assert (state.queued, state.processing, state.ready) == (24, 6, 22)
    assert state.next_in_seconds is not None and state.next_in_seconds <= 0


def test_an_empty_queue_has_nothing_ready_and_no_next_time(database_url, db):
    yacht = add_yacht(db, "Empty")
    queue = Queue(database_url, str(yacht.id), "test-worker", 300)
    try:
        state = queue.state()
    finally:
        queue.close()
    assert (state.queued, state.processing, state.ready, state.next_in_seconds) == (
        0, 0, 0, None)


def test_the_state_reads_the_partial_indexes_not_the_whole_queue_table(queue):
    with queue.conn, queue.conn.cursor() as cur:
        # On a table this small a sequential scan is cheapest; forbidden, the planner shows
        # whether an index can answer at all (`status IN (...)` matches no partial index).
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN " + query("queue_state"), {"yacht_id": queue.yacht_id})
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "embedding_jobs_claim" in plan and "embedding_jobs_processing" in plan, plan
    assert "Seq Scan" not in plan, plan
