"""A fake of the one Cloudflare API endpoint the product calls: writing a Workers KV value.

    PUT /client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/values/{key}
    Authorization: Bearer {token}

answered as Cloudflare does: `200 {"success": true, ...}`, or `{"success": false, "errors":
[{"code": ..., "message": ...}]}` with 400 (a namespace it does not know), 403 (a missing or
wrong token) or 404 (a path it does not serve). The values are kept by namespace and key,
for tests to read; `fail_next(n, status)` answers the next n writes with that status and
`hang_seconds` holds each answer back (a Cloudflare that does not answer in time).

    with FakeCloudflare(token="t0k3n") as cf:
        cf.base_url   # http://127.0.0.1:PORT/client/v4, for CLOUDFLARE_API_BASE_URL
        cf.value(namespace, "gen:<yacht>")   # "3"
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

__all__ = ["FakeCloudflare", "Write"]

_VALUES = re.compile(
    r"/client/v4/accounts/(?P<account>[^/]+)/storage/kv/namespaces/(?P<namespace>[^/]+)"
    r"/values/(?P<key>[^/?]+)")


@dataclass(frozen=True)
class Write:
    """One PUT as it arrived (the token is not kept; `authorized` says if it matched)."""

    account: str
    namespace: str
    key: str
    value: str
    authorized: bool


class FakeCloudflare:
    def __init__(self, *, account: str = "0123456789abcdef0123456789abcdef",
                 namespaces: Iterable[str] = ("fedcba9876543210fedcba9876543210",),
                 token: str = "fake-cloudflare-token") -> None:
        self.account = account
        self.namespaces = set(namespaces)
        self.token = token
        self.hang_seconds = 0.0
        self.writes: list[Write] = []
        self._values: dict[tuple[str, str], str] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-cloudflare", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/client/v4"

    @property
    def namespace(self) -> str:
        """The namespace, when there is one."""
        (namespace,) = self.namespaces
        return namespace

    def value(self, namespace: str, key: str) -> str | None:
        with self._lock:
            return self._values.get((namespace, key))

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def start(self) -> FakeCloudflare:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeCloudflare:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _put(self, path: str, authorization: str | None, body: bytes) -> tuple[int, Any]:
        match = _VALUES.fullmatch(path)
        if match is None:
            return 404, _failure(7003, "Could not route to this path")
        account, namespace = match["account"], match["namespace"]
        key = unquote(match["key"])
        authorized = authorization == f"Bearer {self.token}"
        value = body.decode("utf-8", "replace")
        with self._lock:
            self.writes.append(Write(account, namespace, key, value, authorized))
            failure = self._failures.pop(0) if self._failures else None
        if self.hang_seconds:
            time.sleep(self.hang_seconds)
        if not authorized or account != self.account:
            return 403, _failure(10000, "Authentication error")
        if namespace not in self.namespaces:
            return 400, _failure(10013, "namespace not found")
        if failure is not None:
            return failure, _failure(10001, "service temporarily unavailable")
        with self._lock:
            self._values[(namespace, key)] = value
        return 200, {"success": True, "errors": [], "messages": [], "result": None}


def _failure(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}],
            "messages": [], "result": None}


def _handler(fake: FakeCloudflare) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, payload = fake._put(self.path, self.headers.get("Authorization"), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read `writes`

    return Handler
