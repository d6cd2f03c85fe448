"""The yacht's work queue in Postgres: claim, acknowledge, requeue, dead-letter.

One `Queue` per connection (a lane owns one). Every method is one transaction, and raises
the package's errors (`translated_errors`): a database that went away is DatabaseUnavailable,
one never migrated SchemaNotReady.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..db import query
from ..db.connection import connect, translated_errors


@dataclass
class ClaimedRow:
    job_id: int
    object_type: str
    object_id: uuid.UUID
    search_text: str
    attempts: int
    text_hash: str


@dataclass
class Failure:
    row: ClaimedRow
    code: str
    message: str


@dataclass(frozen=True)
class QueueState:
    queued: int
    processing: int
    ready: int
    next_in_seconds: float | None


MAX_ERROR_CHARS = 1000

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def copy_vectors_payload(rows: Sequence[tuple[ClaimedRow, np.ndarray]]) -> bytes:
    """PostgreSQL's binary COPY format for batch_vectors: pgvector's binary form is
    (int16 dimensions, int16 unused, float4 big-endian each), no text round trip."""
    parts = [_COPY_HEADER]
    for row, vector in rows:
        object_type = row.object_type.encode()
        text_hash = row.text_hash.encode()
        values = np.asarray(vector, dtype=">f4")
        parts += [
            struct.pack(">hi", 4, len(object_type)), object_type,
            struct.pack(">i", 16), row.object_id.bytes,
            struct.pack(">i", len(text_hash)), text_hash,
            struct.pack(">ihh", 4 + 4 * values.size, values.size, 0), values.tobytes(),
        ]
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


class Queue:
    def __init__(self, dsn: str, yacht_id: str, worker: str, lease_seconds: float) -> None:
        self.conn = connect(dsn, application_name=f"f1backfill-worker {worker}"[:63])
        self.yacht_id = uuid.UUID(yacht_id)
        self.worker = worker
        self.lease_seconds = float(lease_seconds)
        self._vectors_table = False  # the temp table exists for this connection's life

    def close(self) -> None:
        self.conn.close()

    def _run(self, name: str, params: dict, *, fetch: bool = False) -> list[tuple]:
        with translated_errors(), self.conn, self.conn.cursor() as cur:
            cur.execute(query(name), {"yacht_id": self.yacht_id, "worker": self.worker,
                                      "lease_seconds": self.lease_seconds, **params})
            return cur.fetchall() if fetch else []

    # -- filling and tidying the queue --------------------------------------------------
    def enqueue_pending(self, skip_types: Sequence[str] = (), *, priority: int = 0,
                        chunk: int = 5000) -> int:
        """Queue the yacht's rows that need an embedding; returns how many were queued."""
        total = 0
        while True:
            with translated_errors(), self.conn, self.conn.cursor() as cur:
                cur.execute(query("enqueue_pending"), {
                    "yacht_id": self.yacht_id, "skip_types": list(skip_types),
                    "priority": priority, "limit": chunk})
                total += cur.rowcount
                if cur.rowcount < chunk:
                    return total

    def skip_types(self, skip_types: Sequence[str]) -> int:
        if not skip_types:
            return 0
        return len(self._run("skip_types", {"skip_types": list(skip_types)}, fetch=True))

    def reclaim_expired(self) -> int:
        return len(self._run("reclaim_expired", {}, fetch=True))

    def heartbeat(self) -> None:
        self._run("heartbeat", {})

    def state(self) -> QueueState:
        (row,) = self._run("queue_state", {}, fetch=True)
        return QueueState(int(row[0]), int(row[1]), int(row[2]),
                          None if row[3] is None else float(row[3]))

    def embedding_dimensions(self) -> int | None:
        rows = self._run("embedding_dimensions", {}, fetch=True)
        return rows[0][0] if rows and rows[0][0] > 0 else None

    # -- a batch's life ------------------------------------------------------------------
    def claim(self, limit: int) -> list[ClaimedRow]:
        rows = self._run("claim_batch", {"limit": limit}, fetch=True)
        return [ClaimedRow(*row) for row in rows]

    def complete(self, done: Sequence[tuple[ClaimedRow, np.ndarray]], failures: Sequence[Failure],
                 retries: Sequence[tuple[Failure, float]], model: str, *, provider: str
                 ) -> int:
        """Write a batch's outcome in one transaction; returns rows embedded.

        `done` rows get their vectors, `failures` go to the dead-letter table, `retries` go
        back to the queue after their delay with one more attempt. Only rows this worker
        still owns are touched: if our lease expired and another worker took a row over, the
        row is theirs now.
        """
        with translated_errors(), self.conn, self.conn.cursor() as cur:
            ids = [r.job_id for r, _ in done] + [f.row.job_id for f in failures]
            cur.execute(query("finish_jobs"), {
                "ids": ids, "worker": self.worker, "status": "done",
                "error_code": None, "error": None})
            owned = {row[0] for row in cur.fetchall()}
            done = [(r, v) for r, v in done if r.job_id in owned]
            embedded = self._store(cur, done, model, provider) if done else 0
            failures = [f for f in failures if f.row.job_id in owned]
            if failures:
                self._dead_letter(cur, failures)
            if retries:
                self._requeue(cur, [(f.row, f.code, f.message, delay) for f, delay in retries])
        self._vectors_table = self._vectors_table or bool(done)  # committed: it exists
        return embedded

    def release(self, rows: Iterable[ClaimedRow]) -> None:
        """Give claimed rows back untouched (shutdown): no attempt is counted."""
        rows = list(rows)
        if rows:
            with translated_errors(), self.conn, self.conn.cursor() as cur:
                self._requeue(cur, [(r, None, None, 0.0) for r in rows])

    def _store(self, cur, done: Sequence[tuple[ClaimedRow, np.ndarray]], model: str,
               provider: str) -> int:
        """Vectors for rows whose text is still the text embedded; returns how many.

        A row whose text changed meanwhile goes back to pending; a stored row's open dead
        letter is resolved.
        """
        if not self._vectors_table:
            # IF NOT EXISTS: cheap, and right even after a rolled-back creation.
            cur.execute(query("vectors_table"))
        cur.copy_expert(query("copy_vectors"), io.BytesIO(copy_vectors_payload(done)))
        cur.execute(query("store_embeddings"), {"model": model, "provider": provider})
        stored = cur.fetchall()
        if len(stored) < len(done):
            cur.execute(query("release_stale_text"), _keys((r for r, _ in done), hashes=True))
        if stored:
            cur.execute(query("resolve_dead_letters"), {
                "object_types": [s[0] for s in stored], "object_ids": [s[1] for s in stored]})
        return len(stored)

    def _dead_letter(self, cur, failures: Sequence[Failure]) -> None:
        cur.execute(query("dead_letter_jobs"), {"ids": [f.row.job_id for f in failures]})
        cur.execute(query("dead_letter_rows"), {
            **_keys(f.row for f in failures),
            "attempts": [f.row.attempts for f in failures],
            "error_codes": [f.code for f in failures],
            "errors": [_cut(f.message) for f in failures]})

    def _requeue(self, cur, items: Sequence[tuple[ClaimedRow, str | None, str | None, float]]
                 ) -> None:
        """(row, error code, error message, delay): back to the queue with the row's
        attempts; a release has no error."""
        rows = [row for row, *_ in items]
        cur.execute(query("requeue_rows"), {
            "worker": self.worker,
            "job_ids": [r.job_id for r in rows],
            **_keys(rows),
            "attempts": [r.attempts for r in rows],
            "error_codes": [code for _, code, _, _ in items],
            "errors": [_cut(message) for _, _, message, _ in items],
            "delays": [delay for *_, delay in items]})


def _cut(message: str | None) -> str | None:
    """Error texts are stored (job, row payload, dead letter) cut to MAX_ERROR_CHARS."""
    return None if message is None else message[:MAX_ERROR_CHARS]


def _keys(rows: Iterable[ClaimedRow], *, hashes: bool = False) -> dict[str, list]:
    rows = list(rows)
    keys = {"object_types": [r.object_type for r in rows],
            "object_ids": [r.object_id for r in rows]}
    if hashes:
        keys["text_hashes"] = [r.text_hash for r in rows]
    return keys
