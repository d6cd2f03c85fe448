"""Dead-letter operations: list, retry (back to the queue), abandon. Each idempotent.

The same operations run from the CLI (`f1backfill dlq ...`) and from kubectl: the operator
replays a yacht's dead letters when its YachtBackfill gets a new value of the annotation
`f1cortex.io/replay-dead-letters` (and abandons them for `.../abandon-dead-letters`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from . import query

_BIGINT_MAX = 2**63 - 1

# Retried rows go ahead of the bulk backfill in the yacht's queue: a person asked.
RETRY_PRIORITY = 10


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    yacht_id: uuid.UUID | None
    object_type: str
    object_id: uuid.UUID
    error_code: str | None
    attempts: int
    last_failure_at: datetime
    resolved_at: datetime | None
    resolution_type: str | None
    error: str


def _filters(yacht_id: str | None, code: str | None, ids: Sequence[str] | None) -> dict:
    return {"yacht_id": yacht_id, "code": code,
            "ids": [uuid.UUID(i) for i in ids] if ids else None}


def list_dead_letters(conn, *, yacht_id: str | None = None, code: str | None = None,
                      include_resolved: bool = False, limit: int = 1000) -> list[DeadLetter]:
    with conn, conn.cursor() as cur:
        # A limit past the bigint range is no limit at all (and would not be a bigint).
        cur.execute(query("dlq_list"), {**_filters(yacht_id, code, None),
                                         "all": include_resolved,
                                         "limit": min(limit, _BIGINT_MAX)})
        return [DeadLetter(*row) for row in cur.fetchall()]


def retry(conn, *, yacht_id: str | None = None, code: str | None = None,
          ids: Sequence[str] | None = None) -> dict[str, int]:
    """Re-queue unresolved dead letters; returns how many per yacht."""
    with conn, conn.cursor() as cur:
        cur.execute(query("dlq_retry"), {**_filters(yacht_id, code, ids),
                                          "priority": RETRY_PRIORITY})
        return {str(y): n for y, n in cur.fetchall()}


def abandon(conn, *, yacht_id: str | None = None, code: str | None = None,
            ids: Sequence[str] | None = None) -> dict[str, int]:
    """Resolve unresolved dead letters as abandoned; returns how many per yacht."""
    with conn, conn.cursor() as cur:
        cur.execute(query("dlq_abandon"), _filters(yacht_id, code, ids))
        counts: dict[str, int] = {}
        for (yacht,) in cur.fetchall():
            counts[str(yacht)] = counts.get(str(yacht), 0) + 1
        return counts

