"""The search front door for the demo: `f1backfill serve` as its own process, as in a
cluster, and a small client of its HTTP API (standard library only) with tokens signed by
the secret the demo gave the server."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import jwt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float


class SearchServer:
    """`f1backfill serve` on 127.0.0.1, with a JWT secret of its own; `stop()` ends it."""

    def __init__(self, command: str, *, database_url: str, redis_url: str, log: Path,
                 env: dict[str, str]) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [command, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                 "JWT_SECRET": self.secret, "EMBEDDING_PROVIDER": "hash",
                 "LOG_LEVEL": "WARNING"},
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"f1backfill serve exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"f1backfill serve was not healthy within {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token(self, yacht_id: str, *, user_id: str | None = None, role: str = "captain",
              org_id: str = "00000000-0000-4000-8000-00000000f1f1") -> str:
        """A token as the identity provider would issue it for a user of `yacht_id`."""
        now = int(time.time())
        return jwt.encode({"yacht_id": yacht_id, "user_id": user_id or str(uuid.uuid4()),
                           "org_id": org_id, "role": role, "iat": now, "exp": now + 600},
                          self.secret, algorithm="HS256")

    def search(self, token: str, q: str, limit: int = 20) -> Answer:
        query = urllib.parse.urlencode({"q": q, "limit": limit})
        return self._call("GET", f"/api/f1/search?{query}", token)

    def click(self, token: str, **body: Any) -> Answer:
        return self._call("POST", "/api/analytics/search-click", token, body)

    def _call(self, method: str, path: str, token: str,
              body: dict[str, Any] | None = None) -> Answer:
        request = urllib.request.Request(
            self.url + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return Answer(status, json.loads(raw or b"{}"), time.perf_counter() - started)
