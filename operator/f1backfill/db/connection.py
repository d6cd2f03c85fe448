"""Opening a database connection: the one module of the package that imports psycopg2 to
connect, so the pure modules of `db` (queries, figures) load without a driver."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from ..errors import ConfigError

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
        raise ConfigError(f"cannot connect to the database: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
