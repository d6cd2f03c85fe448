"""The database side of a search, and the query's embedding. Blocking: the HTTP layer runs
these calls in its thread pool.

A search ranks the rows of one yacht (the token's), only rows whose embedding is current
(`embedding_status = 'embedded'`), by cosine distance to the query embedded with the
provider, model and length the yacht's rows were embedded with: comparing vectors of two
models gives a ranking that looks fine and means nothing, so a mismatch is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.pool

from ..db import query
from ..db.connection import check_url, translated_errors
from ..errors import EmbeddingMismatch
from ..feedback import record_click
from ..worker.providers import EmbeddingProvider

SNIPPET_CHARS = 200
# How long a yacht's embedding signature is trusted before it is read again: a re-embed
# with another model is rare, and a search between the change and the re-read still
# compares like with like (the search filters on the signature).
SIGNATURE_TTL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Hit:
    object_type: str
    object_id: str
    score: float | None  # cosine similarity, 1 = same direction; None: no query to rank by
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        return {"object_type": self.object_type, "object_id": self.object_id,
                "score": self.score, "snippet": self.snippet}


@dataclass(frozen=True, slots=True)
class Signature:
    """How vectors were made: two vectors compare only with the same signature."""

    provider: str | None  # None: rows embedded before the provider was recorded
    model: str
    dimensions: int

    def __str__(self) -> str:
        return f"{self.provider or 'unrecorded provider'} {self.model} ({self.dimensions})"

    def accepts(self, other: Signature) -> bool:
        return (self.model, self.dimensions) == (other.model, other.dimensions) and \
            other.provider in (None, self.provider)


class SearchIndex:
    """search_index and search_click_events, through a small pool of connections."""

    def __init__(self, dsn: str, *, connections: int = 8) -> None:
        check_url(dsn)
        self.dsn = dsn
        self.connections = connections
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with translated_errors():
            pool = self._connected()
            conn = pool.getconn()
            broken = False
            try:
                with conn, conn.cursor() as cur:
                    yield cur
            except psycopg2.Error:
                broken = bool(conn.closed)
                raise
            finally:
                pool.putconn(conn, close=broken)

    def _connected(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    1, self.connections, self.dsn, application_name="f1backfill-serve",
                    connect_timeout=5)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None

    def ping(self) -> None:
        with self._cursor() as cur:
            cur.execute("SELECT 1")

    def signatures(self, yacht_id: str) -> list[tuple[Signature, int]]:
        with self._cursor() as cur:
            cur.execute(query("search_signatures"), {"yacht_id": yacht_id})
            return [(Signature(provider, model, dims), count)
                    for provider, model, dims, count in cur.fetchall()]

    def nearest(self, yacht_id: str, vector: Any, signature: Signature,
                object_types: Collection[str] | None, limit: int) -> list[Hit]:
        literal = "[" + ",".join(map(repr, map(float, vector))) + "]"
        with self._cursor() as cur:
            cur.execute(query("search_nearest"), {
                "yacht_id": yacht_id, "vector": literal, "model": signature.model,
                "provider": signature.provider,
                "object_types": _types(object_types), "limit": limit,
                "snippet_chars": SNIPPET_CHARS})
            return [Hit(t, str(i), float(score), snippet)
                    for t, i, score, snippet in cur.fetchall()]

    def recent(self, yacht_id: str, object_types: Collection[str] | None,
               limit: int) -> list[Hit]:
        with self._cursor() as cur:
            cur.execute(query("search_recent"), {
                "yacht_id": yacht_id, "object_types": _types(object_types), "limit": limit,
                "snippet_chars": SNIPPET_CHARS})
            return [Hit(t, str(i), None, snippet) for t, i, _, snippet in cur.fetchall()]

    def top_queries(self, yacht_id: str, *, days: int, limit: int) -> list[str]:
        if limit <= 0:
            return []
        with self._cursor() as cur:
            cur.execute(query("top_queries"),
                        {"yacht_id": yacht_id, "days": days, "limit": limit})
            return [row[0] for row in cur.fetchall()]

    def record_click(self, **click: Any) -> str:
        with translated_errors():
            pool = self._connected()
            conn = pool.getconn()
            try:
                return str(record_click(conn, **click))
            finally:
                pool.putconn(conn, close=bool(conn.closed))


def _types(object_types: Collection[str] | None) -> list[str] | None:
    return None if object_types is None else sorted(object_types)


class Searcher:
    """A query's hits within one yacht: embedded as the yacht's rows were, then ranked."""

    def __init__(self, index: SearchIndex, provider: EmbeddingProvider,
                 signature: Signature, *, clock=time.monotonic) -> None:
        self.index = index
        self.provider = provider
        self.signature = signature
        self._clock = clock
        self._signatures: dict[str, tuple[float, list[Signature]]] = {}
        self._lock = threading.Lock()

    def search(self, yacht_id: str, normalized_query: str,
               object_types: Collection[str] | None, limit: int) -> list[Hit]:
        if not normalized_query:  # no query: the yacht's latest rows
            return self.index.recent(yacht_id, object_types, limit)
        found = self._yacht_signatures(yacht_id)
        if found and not any(self.signature.accepts(s) for s in found):
            raise EmbeddingMismatch(
                f"the rows of yacht {yacht_id} were embedded with "
                f"{', '.join(map(str, found))}; this server embeds queries with "
                f"{self.signature}: set EMBEDDING_PROVIDER, EMBEDDING_MODEL and "
                "EMBEDDING_DIMENSIONS as the yacht's backfill had them")
        if not found:
            return []  # nothing embedded yet
        (vector,) = self.provider.embed([normalized_query]).vectors
        return self.index.nearest(yacht_id, vector, self.signature, object_types, limit)

    def _yacht_signatures(self, yacht_id: str) -> list[Signature]:
        now = self._clock()
        with self._lock:
            cached = self._signatures.get(yacht_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = [signature for signature, _ in self.index.signatures(yacht_id)]
        with self._lock:
            self._signatures[yacht_id] = (now + SIGNATURE_TTL_SECONDS, found)
        return found


def click_kwargs(*, claims: Any, body: Any, max_query_chars: int) -> dict[str, Any]:
    """A click's columns: who and where from the verified token, what from the body."""
    search_timestamp: datetime | None = body.search_timestamp
    return {"org_id": claims.org_id, "yacht_id": claims.yacht_id, "user_id": claims.user_id,
            "search_id": str(body.search_id) if body.search_id else None,
            "query_text": body.query_text, "object_type": body.clicked_object_type,
            "object_id": str(body.clicked_object_id), "position": body.click_position,
            "search_timestamp": search_timestamp, "dwell_time_ms": body.dwell_time_ms,
            "was_successful": body.was_successful, "max_query_chars": max_query_chars}
