"""Versioned, idempotent migrations.

Files in migrations/ are named NNN_name.sql and applied in order, each in its own
transaction, recorded in schema_migrations. A session advisory lock serialises concurrent
runs (two Jobs' init containers, a Helm hook and a developer), so the second waits and then
finds nothing to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from ..defaults import EMBEDDING_DIMENSIONS
from ..errors import MigrationError
from . import query
from .connection import connect

log = logging.getLogger(__name__)

# Any fixed 64-bit number; identifies our migration lock among other advisory locks.
MIGRATION_LOCK_ID = 0x_F1C0_47E8
_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


def available() -> list[Migration]:
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def migrate(dsn: str, *, dimensions: int = EMBEDDING_DIMENSIONS.default) -> list[int]:
    """Bring the schema up to date; returns the versions applied by this call."""
    if not EMBEDDING_DIMENSIONS.admits(dimensions):
        raise MigrationError(f"dimensions must be within {EMBEDDING_DIMENSIONS.minimum}.."
                             f"{EMBEDDING_DIMENSIONS.maximum}, got {dimensions}")
    conn = connect(dsn, application_name="f1backfill-migrate")
    applied: list[int] = []
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query("migration_lock"), {"lock_id": MIGRATION_LOCK_ID})
            try:
                cur.execute(query("migrations_table"))
                cur.execute(query("migrations_applied"))
                done = {row[0] for row in cur.fetchall()}
                for migration in available():
                    if migration.version in done:
                        continue
                    _apply(conn, migration, dimensions)
                    applied.append(migration.version)
            finally:
                cur.execute(query("migration_unlock"), {"lock_id": MIGRATION_LOCK_ID})
    finally:
        conn.close()
    return applied


def _apply(conn, migration: Migration, dimensions: int) -> None:
    log.info("applying migration %03d_%s", migration.version, migration.name)
    # The only composed value, an int validated by migrate(): a literal is safe here, and
    # str.format would trip over the braces of JSON literals in the SQL.
    body = migration.text.replace("{dimensions}", str(int(dimensions)))
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(body)
            cur.execute(query("migration_record"),
                        {"version": migration.version, "name": migration.name})
        conn.commit()
    except Exception as exc:
        conn.rollback()
        raise MigrationError(f"migration {migration.version:03d}_{migration.name} failed: {exc}") \
            from exc
    finally:
        conn.autocommit = True

