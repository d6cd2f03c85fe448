"""Counterfactual click feedback: learn query terms from clicks.

`learn` aggregates the last window of clicks per (query, object) and appends what it learns,
safely:
- a query is compared with search_text as plain text (`querytext.contains_term`), never
  as a LIKE pattern built from user text;
- a term is appended once: a second run finds it present and appends nothing;
- search_text stays within PROJECTION_MAX_SEARCH_TEXT. The projected text comes first and
  is never cut; learned terms are appended, most-clicked first, only while they fit — a
  term that does not fit is skipped (reported as `full`), not squeezed in by dropping text;
- each row is updated with a guard on the text it was chosen against (md5), so a
  concurrent rewrite is never lost: the row is re-read and re-decided;
- what was learned is logged per yacht in feedback_learning_log: the terms actually
  appended, each with its object, clicks and average position.
The rows are re-queued for embedding, so with `mode: Continuous` the operator re-admits the
yacht and the loop closes: clicks -> learned term -> re-embedded -> ranked higher.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .config import FeedbackSettings
from .db import query
from .db.connection import connect
from .errors import BackfillError, NotFound
from .querytext import contains_term, normalize_query

log = logging.getLogger(__name__)

# Learned terms go ahead of the bulk backfill in the yacht's queue: a person asked.
FEEDBACK_PRIORITY = 10
MAX_GUARD_RETRIES = 5


@dataclass
class Candidate:
    yacht_id: uuid.UUID
    object_type: str
    object_id: uuid.UUID
    term: str
    clicks: int
    avg_position: float
    action: str = ""  # append | present | full


@dataclass
class LearnResult:
    candidates: list[Candidate] = field(default_factory=list)
    terms_added: dict[str, int] = field(default_factory=dict)  # by yacht
    objects_updated: dict[str, int] = field(default_factory=dict)

    @property
    def total_terms(self) -> int:
        return sum(self.terms_added.values())

    @property
    def total_objects(self) -> int:
        return sum(self.objects_updated.values())


def record_click(conn, *, org_id: str, yacht_id: str, user_id: str, query_text: str,
                 object_type: str, object_id: str, position: int | None,
                 search_id: str | None = None, clicked_at: datetime | None = None,
                 search_timestamp: datetime | None = None, dwell_time_ms: int | None = None,
                 was_successful: bool | None = None, max_query_chars: int = 200) -> uuid.UUID:
    """Store one click. The query is normalised (and refused if it holds control
    characters) before anything is written; the clicked object must be a row of the
    click's yacht (`NotFound` otherwise, and nothing is written)."""
    normalized = normalize_query(query_text, max_query_chars)
    if position is not None and position < 1:
        raise BackfillError("click position is 1-based: the top result is 1")
    with conn, conn.cursor() as cur:
        cur.execute(query("record_click"), {
            "org_id": org_id, "yacht_id": yacht_id, "user_id": user_id,
            "search_id": search_id, "query_text": query_text[:10_000],
            "query_normalized": normalized, "object_type": object_type,
            "object_id": object_id, "position": position, "clicked_at": clicked_at,
            "search_timestamp": search_timestamp, "dwell_time_ms": dwell_time_ms,
            "was_successful": was_successful})
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no search_index row {object_type}/{object_id} in yacht {yacht_id}: "
                       "a click must name an indexed object of its yacht")
    return row[0]


def learn(settings: FeedbackSettings, *, yacht_id: str | None = None,
          dry_run: bool = False) -> LearnResult:
    conn = connect(settings.database_url, application_name="f1backfill-feedback")
    try:
        return _learn(conn, settings, yacht_id, dry_run)
    finally:
        conn.close()


def _learn(conn, settings: FeedbackSettings, yacht_id: str | None,
           dry_run: bool) -> LearnResult:
    result = LearnResult()
    with conn, conn.cursor() as cur:
        cur.execute(query("feedback_candidates"), {
            "window_days": settings.window_days, "min_clicks": settings.min_clicks,
            "max_avg_position": settings.max_avg_position, "yacht_id": yacht_id})
        rows = cur.fetchall()
    # One object at a time: its terms, most clicked first, against its current text.
    objects: dict[tuple, dict] = {}
    for yacht, object_type, object_id, term, clicks, avg_position, text, text_hash in rows:
        key = (yacht, object_type, object_id)
        entry = objects.setdefault(key, {"text": text, "hash": text_hash, "terms": []})
        entry["terms"].append(Candidate(yacht, object_type, object_id, term, clicks,
                                        float(avg_position)))
    for (yacht, object_type, object_id), entry in objects.items():
        added = _learn_object(conn, settings, object_type, object_id, entry, dry_run)
        result.candidates.extend(entry["terms"])
        if added:
            key = str(yacht)
            result.terms_added[key] = result.terms_added.get(key, 0) + added
            result.objects_updated[key] = result.objects_updated.get(key, 0) + 1
    if not dry_run:
        _log_run(conn, result)
    return result


def _plan(text: str, terms: list[Candidate], cap: int) -> list[Candidate]:
    """Mark each candidate append / present / full against `text`; returns the appended."""
    chosen = []
    length = len(text)
    for candidate in terms:
        if contains_term(text, candidate.term) or any(
                contains_term(c.term, candidate.term) for c in chosen):
            candidate.action = "present"
        elif length + 1 + len(candidate.term) > cap:
            candidate.action = "full"
        else:
            candidate.action = "append"
            chosen.append(candidate)
            length += 1 + len(candidate.term)
    return chosen


def _learn_object(conn, settings: FeedbackSettings, object_type: str, object_id: uuid.UUID,
                  entry: dict, dry_run: bool) -> int:
    text, text_hash = entry["text"], entry["hash"]
    for _ in range(MAX_GUARD_RETRIES):
        chosen = _plan(text, entry["terms"], settings.max_search_text)
        if not chosen or dry_run:
            return len(chosen)
        suffix = "".join(" " + c.term for c in chosen)
        with conn, conn.cursor() as cur:
            cur.execute(query("feedback_append"), {
                "suffix": suffix, "object_type": object_type, "object_id": object_id,
                "text_hash": text_hash, "priority": FEEDBACK_PRIORITY})
            if cur.fetchone()[0]:
                return len(chosen)
            # The text changed since we read it (or the row is gone): decide again.
            cur.execute(query("feedback_row"), {"object_type": object_type,
                                                "object_id": object_id})
            row = cur.fetchone()
        if row is None:
            for candidate in entry["terms"]:
                candidate.action = "gone"
            return 0
        text, text_hash = row
    log.warning("gave up on %s %s: its text kept changing", object_type, object_id)
    return 0


def _log_run(conn, result: LearnResult) -> None:
    per_yacht: dict[str, list[dict]] = {}
    for c in result.candidates:
        if c.action == "append":
            per_yacht.setdefault(str(c.yacht_id), []).append(
                {"object_type": c.object_type, "object_id": str(c.object_id), "term": c.term,
                 "clicks": c.clicks, "avg_position": c.avg_position})
    yachts = {str(c.yacht_id) for c in result.candidates}
    with conn, conn.cursor() as cur:
        for yacht in sorted(yachts):
            cur.execute(query("feedback_log"), {
                "yacht_id": yacht, "terms_added": result.terms_added.get(yacht, 0),
                "objects_updated": result.objects_updated.get(yacht, 0),
                "details": json.dumps({"learned": per_yacht.get(yacht, [])})})


def render(result: LearnResult, *, dry_run: bool) -> str:
    """The run as a table (what `feedback learn --dry-run` prints)."""
    header = f"{'yacht':<36}  {'object':<48}  {'clicks':>6}  {'avg pos':>7}  {'action':<8}  term"
    lines = [header]
    for c in result.candidates:
        target = f"{c.object_type}/{c.object_id}"
        lines.append(f"{c.yacht_id!s:<36}  {target:<48}  {c.clicks:>6}  {c.avg_position:>7.2f}"
                     f"  {c.action:<8}  {c.term}")
    verb = "would add" if dry_run else "added"
    lines.append(f"\n{verb} {result.total_terms} terms to {result.total_objects} objects "
                 f"({len(result.candidates)} candidates)")
    return "\n".join(lines)


def search_rank(conn, yacht_id: str, object_id: uuid.UUID, query_vector) -> int | None:
    """Where an object ranks among its yacht's rows for a query vector (cosine distance,
    1 = first): how the demo and the tests see that learning helped."""
    literal = "[" + ",".join(map(repr, [float(x) for x in query_vector])) + "]"
    with conn.cursor() as cur:
        cur.execute(query("search_rank"), {
            "query_vector": literal, "yacht_id": yacht_id, "object_id": object_id})
        row = cur.fetchone()
    return row[0] if row else None
