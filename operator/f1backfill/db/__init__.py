"""The database layer: connections, named queries from queries.sql, migrations."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from ..errors import ConfigError

psycopg2.extras.register_uuid()

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """The named blocks of queries.sql, split on `-- name: <name>` lines (procrastinate's way)."""
    text = resources.files(__package__).joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    named = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        named[name] = body.strip()
    return named


def query(name: str) -> str:
    return queries()[name]


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
