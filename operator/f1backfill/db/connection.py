"""Opening a database connection: the one module of the package that imports psycopg2 to
connect, so the pure modules of `db` (queries, figures) load without a driver."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from ..errors import ConfigError, DatabaseUnavailable, SchemaNotReady

# Process-wide: UUIDs adapted both ways on every connection, ours or a test's.
psycopg2.extras.register_uuid()


def connect(dsn: str, *, application_name: str = "f1backfill") -> psycopg2.extensions.connection:
    """A connection with UUIDs adapted both ways; a clear error when the URL is missing."""
    if not dsn:
        raise ConfigError("DATABASE_URL is not set")
    try:
        return psycopg2.connect(dsn, application_name=application_name, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        # psycopg2's message can echo the URL; keep the password out of logs.
        raise DatabaseUnavailable(f"cannot connect to the database: {_first_line(exc)}") \
            from exc


# A statement naming a table, column or function the schema does not have: the database
# was never migrated (or is an older version). Running the migrations fixes it.
_UNMIGRATED = (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn,
               psycopg2.errors.UndefinedFunction, psycopg2.errors.UndefinedObject)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """psycopg2's exceptions as the package's: a database away for a while is transient, a
    schema that lacks what a query needs is permanent until someone runs the migrations."""
    try:
        yield
    except _UNMIGRATED as exc:
        raise SchemaNotReady(f"{_first_line(exc)}: run `f1backfill migrate`") from exc
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise DatabaseUnavailable(f"database: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
