"""The operator's reads (and drift re-queues) of the fleet's database state."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

import psycopg2
from psycopg2 import sql

from ..errors import SchemaNotReady
from . import query
from .connection import connect, translated_errors
from .deadletters import abandon, retry
from .figures import DriftProbe, YachtFigures

log = logging.getLogger(__name__)

# The columns of fleet_figures after yacht_id and object_type.
_COUNTS = ("total", "embedded", "pending", "queued", "processing", "failed", "dlq")


class FleetDatabase:
    """A single connection, used from one thread at a time (the reconciler's)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, application_name="f1backfill-operator")
            self._conn.autocommit = True
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fetch(self, statement, params: dict) -> list[tuple]:
        try:
            with translated_errors(), self._connection().cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall()
        except Exception:
            self.close()  # a broken connection is replaced at the next call
            raise

    def figures(self, skipped: Mapping[str, Collection[str]]) -> dict[str, YachtFigures]:
        """Every yacht's rows by status and its unresolved dead letters, in two grouped
        queries. `skipped` maps each yacht to the object types left alone: their pending
        rows are reported as `skipped`, not as work."""
        if not skipped:
            return {}
        ids = [uuid.UUID(y) for y in skipped]
        rows = self._fetch(query("fleet_figures"), {"yacht_ids": ids})
        dead = {str(y): n for y, n in self._fetch(query("fleet_dead_letters"),
                                                   {"yacht_ids": ids})}
        totals: dict[str, Counter] = {str(y): Counter() for y in dead}
        for yacht, object_type, *counts in rows:
            total = totals.setdefault(str(yacht), Counter())
            named = dict(zip(_COUNTS, counts, strict=True))
            if object_type in skipped.get(str(yacht), ()):
                named["skipped"] = named.pop("pending")
            total.update(named)
        return {yacht: YachtFigures(**total, unresolved_dlq=dead.get(yacht, 0))
                for yacht, total in totals.items()}

    def drift(self, probes: Iterable[DriftProbe], *, requeue: Collection[str] = ()
              ) -> tuple[dict[str, int], dict[str, int]]:
        """(stale rows per yacht, rows re-queued per yacht), one query per source table.

        `requeue` names the yachts whose stale rows are marked for re-embedding.
        A source table that does not exist is skipped with a warning, not an error: the
        default source (pms_work_orders) may not be part of every deployment.
        """
        stale: dict[str, int] = {}
        requeued: dict[str, int] = {}
        groups: dict[tuple[str, str, str, str], list[DriftProbe]] = {}
        for probe in probes:
            key = (probe.object_type, probe.table, probe.id_column, probe.updated_column)
            groups.setdefault(key, []).append(probe)
        for (object_type, table, id_column, updated_column), members in groups.items():
            identifiers = {"table": sql.Identifier(table), "id_column": sql.Identifier(id_column),
                           "updated_column": sql.Identifier(updated_column)}
            params = {"object_type": object_type,
                      "yacht_ids": [uuid.UUID(p.yacht_id) for p in members],
                      "tolerances": [p.tolerance_minutes for p in members]}
            try:
                for yacht, count in self._fetch(
                        sql.SQL(query("drift_stale")).format(**identifiers), params):
                    stale[str(yacht)] = stale.get(str(yacht), 0) + count
                chosen = [p for p in members if p.yacht_id in requeue]
                if chosen:
                    params = {"object_type": object_type,
                              "yacht_ids": [uuid.UUID(p.yacht_id) for p in chosen],
                              "tolerances": [p.tolerance_minutes for p in chosen]}
                    for (yacht,) in self._fetch(
                            sql.SQL(query("drift_requeue")).format(**identifiers), params):
                        requeued[str(yacht)] = requeued.get(str(yacht), 0) + 1
            except (SchemaNotReady, psycopg2.ProgrammingError, psycopg2.DataError) as exc:
                # An absent table or column, or one of another type: report, keep going.
                # (A database that is away fails the whole tick, at the figures.)
                log.warning("drift check of %s (%s) failed: %s", table, object_type,
                            str(exc).strip().splitlines()[0])
        return stale, requeued

    def replay_dead_letters(self, yacht_id: str) -> int:
        with translated_errors():
            return sum(retry(self._connection(), yacht_id=yacht_id).values())

    def abandon_dead_letters(self, yacht_id: str) -> int:
        with translated_errors():
            return sum(abandon(self._connection(), yacht_id=yacht_id).values())

    def feedback_runs(self) -> dict[str, tuple[int, int, float]]:
        """The latest feedback run per yacht: (terms added, objects updated, unix time)."""
        return {str(y): (terms, objects, float(at))
                for y, terms, objects, at in self._fetch(query("feedback_last_runs"), {})}

