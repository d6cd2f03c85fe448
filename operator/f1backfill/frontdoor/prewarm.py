"""The login pre-warm: before the user opens the search box, cache what they are likely to
search for: the queries everybody starts with, and their yacht's most clicked queries of
the last week. Best effort, in the background: a failure is logged and counted, never
seen by the login."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..querytext import normalize_query
from .metrics import FrontDoorMetrics

log = logging.getLogger(__name__)

# The queries users start with: "" (the yacht's latest rows), then the common ones.
COMMON_QUERIES = ("", "work order", "maintenance", "oil filter", "certificate", "manual")
RECENT_DAYS = 7


async def prewarm(queries: list[str], warm: Callable[[str], Awaitable[bool]], *,
                  concurrency: int, metrics: FrontDoorMetrics) -> int:
    """Run `warm(normalised query)` for each distinct query, `concurrency` at a time;
    `warm` returns whether it computed and cached (False: already cached). Returns how many
    it cached."""
    metrics.prewarm_runs.inc()
    limit = asyncio.Semaphore(concurrency)
    distinct = list(dict.fromkeys(queries))

    async def one(text: str) -> bool:
        async with limit:
            try:
                return await warm(text)
            except Exception as exc:  # best effort: the next search computes it anyway
                metrics.prewarm_failures.inc()
                log.warning("pre-warm of %r failed: %s", text, exc)
                return False

    cached = sum(await asyncio.gather(*(one(text) for text in distinct)))
    metrics.prewarmed.inc(cached)
    return cached


def login_queries(top_queries: list[str], max_chars: int) -> list[str]:
    """The common queries and the yacht's top ones, normalised as a search normalises."""
    queries = [""]
    for text in (*COMMON_QUERIES[1:], *top_queries):
        try:
            queries.append(normalize_query(text, max_chars))
        except ValueError:  # a stored query no longer normalises (a rule changed): skip it
            continue
    return queries
