"""`/health` and `/metrics` on one port (PROMETHEUS_PORT): the Job's liveness probe reads
the one, Prometheus scrapes the other.

/health answers 200 {"status": "healthy"} or 503 {"status": "degraded", "reason": ...} with
one of three reasons: circuit_open, consecutive_failures (more than 10), idle_with_pending
(nothing processed for 5 minutes while rows are queued).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import WorkerMetrics

IDLE_LIMIT_SECONDS = 300.0
MAX_CONSECUTIVE_FAILURES = 10
SHUTDOWN_POLL_SECONDS = 0.05


class HealthState:
    def __init__(self, metrics: WorkerMetrics, clock=time.monotonic) -> None:
        self.metrics = metrics
        self._clock = clock
        self.started = clock()
        self.last_batch: float | None = None
        self.last_batch_wall: float | None = None
        self.pending = 0
        self.breaker_open = False
        self.consecutive_failures = 0

    def batch_done(self, *, success: bool, consecutive_failures: int) -> None:
        self.consecutive_failures = consecutive_failures
        if success:
            self.last_batch = self._clock()
            self.last_batch_wall = time.time()

    def verdict(self) -> tuple[int, dict]:
        if self.breaker_open:
            return 503, {"status": "degraded", "reason": "circuit_open"}
        if self.consecutive_failures > MAX_CONSECUTIVE_FAILURES:
            return 503, {"status": "degraded", "reason": "consecutive_failures"}
        since = self.last_batch if self.last_batch is not None else self.started
        if self.pending > 0 and self._clock() - since > IDLE_LIMIT_SECONDS:
            return 503, {"status": "degraded", "reason": "idle_with_pending"}
        return 200, {"status": "healthy", "last_batch": self.last_batch_wall,
                     "pending": self.pending}


class HealthServer:
    def __init__(self, state: HealthState, port: int, host: str = "0.0.0.0") -> None:
        self.state = state
        handler = _handler(state)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        # serve_forever looks for `shutdown` every poll interval: at the default 0.5 s the
        # worker's exit waited up to half a second for it, between two Jobs.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                                        name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(state: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                code, body = state.verdict()
                self._send(code, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(state.metrics.registry))
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every 15 s would flood the log
            pass

    return Handler
