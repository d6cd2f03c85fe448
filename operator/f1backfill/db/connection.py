"""Opening a database connection: the one module of the package that imports psycopg2 to
connect, so the pure modules of `db` (queries, figures) load without a driver."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from ..errors import ConfigError, DatabaseUnavailable, SchemaNotReady

# Process-wide: UUIDs adapted both ways on every connection, ours or a test's.
psycopg2.extras.register_uuid()


# What a valid DATABASE_URL looks like, for the messages that refuse one.
URL_EXAMPLE = "postgresql://user:password@host:5432/dbname"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# `user:password@` of a URL, up to its last `@` (a password may hold one): what a message
# quoting libpq's complaint must not show.
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:).*@")


def check_url(dsn: str) -> None:
    """A ConfigError unless libpq can read `dsn` (DATABASE_URL): a URL that is missing or
    malformed is a setting to fix, not a database to wait for. The message says what a
    valid one looks like and never shows the URL's password."""
    if not dsn:
        raise ConfigError(f"DATABASE_URL is not set: expected {URL_EXAMPLE}")
    scheme = _SCHEME.match(dsn)
    if scheme and scheme[1].lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL is a {scheme[1]}:// URL, not a PostgreSQL one: "
                          f"expected {URL_EXAMPLE}")
    try:
        parsed = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        raise ConfigError(f"DATABASE_URL is not a valid PostgreSQL URL{_why(dsn, scheme)}: "
                          f"expected {URL_EXAMPLE}") from None
    for port in (parsed.get("port") or "").split(","):  # libpq: one port per host
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"DATABASE_URL has port {port!r}, not a number from 1 to 65535: "
                              f"expected {URL_EXAMPLE}")


def _why(dsn: str, scheme: re.Match | None) -> str:
    """libpq's complaint about a postgresql:// URL, read from a copy without its password.
    Nothing for other strings: libpq read them as `key=value` pairs and would quote them
    (a key=value string can hold `password=`)."""
    if not scheme:
        return ""
    try:
        psycopg2.extensions.parse_dsn(_PASSWORD.sub(r"\1***@", dsn))
    except psycopg2.ProgrammingError as exc:
        return f" ({_first_line(exc).removeprefix('invalid dsn: ')})"
    return " (in its user or password, write a special character as %XX)"


def connect(dsn: str, *, application_name: str = "f1backfill") -> psycopg2.extensions.connection:
    """A connection with UUIDs adapted both ways; a ConfigError when the URL is missing or
    malformed (`check_url`), DatabaseUnavailable when the server cannot be reached."""
    check_url(dsn)
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
        raise DatabaseUnavailable(f"database: {_first_line(_original(exc))}") from exc


def _original(exc: BaseException) -> BaseException:
    """The first database error of a chain: a statement on a connection the server closed
    fails with why, then the rollback on leaving `with conn` with "connection already
    closed", which alone would hide it."""
    while isinstance(exc.__context__, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        exc = exc.__context__
    return exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
