"""An OpenAI-compatible fake embeddings server for tests and benchmarks.

It serves ``POST /v1/embeddings`` the way OpenAI does (request validation, error bodies,
``x-ratelimit-*`` headers, base64 or float vectors) behind an exact token-bucket limiter,
and injects faults on demand so the worker's retry, bisect and circuit-breaker paths can be
driven through the real ``openai`` SDK.

Order of checks for one embeddings request, and why:
  auth (401) -> JSON and validation (400) -> poison markers (400)
  -> injected 429 faults (nothing deducted: OpenAI refused it)
  -> limiter (429, nothing deducted) -> other injected faults (the request was admitted, so
  its quota is spent, as when OpenAI fails after admission) -> latency -> 200.

Control it from Python (``FakeOpenAI``) or, for a server started as a subprocess with
``python -m f1sandbox.fake_openai``, over HTTP:
  POST /_fake/faults  {"clear": true, "hang_seconds": 1.0, "fail_next": {"n": 2, "kind": "500"},
                       "error_rate": {"p": 0.1, "kind": "503"}, "poison": "BAD",
                       "wrong_dimension_for": ["ODD"]}   (every key optional, applied in that order)
  POST /_fake/limits  {"rpm": 60, "tpm": 10000, "burst_seconds": 60}   (any subset)
  POST /_fake/reset   faults and stats cleared, both buckets refilled, or emptied with
                      {"empty": true}
  GET  /_fake/stats   FakeStats.to_dict()

Both buckets start full, as OpenAI's do for an account nobody used for a minute, or with
``start_empty=True`` (``--start-empty``) spent, as they are when the previous Job has just
used the account: what a fleet backfill meets from its second Job on, and what the
benchmarks measure against.

Vectors come from the standard library only (the project does not depend on numpy): SHAKE-256
of seed+text gives one byte per dimension, each byte picks one of 256 normal quantiles, and the
vector is scaled to unit length with ``bytes.translate`` so no Python loop runs per dimension.
Asking for fewer ``dimensions`` gives a prefix of the same vector, renormalised, which is what
OpenAI's text-embedding-3 models do.
"""

from __future__ import annotations

import argparse
import array
import base64
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
from types import TracebackType
from typing import Any, Final, Literal, cast, get_args

__all__ = [
    "FAULT_KINDS",
    "FakeOpenAI",
    "FakeStats",
    "FaultKind",
    "TokenBucket",
    "count_tokens",
    "embedding_bytes",
    "format_duration",
]

# OpenAI's documented per-request limits for the embeddings endpoint.
MAX_INPUTS: Final = 2048
MAX_INPUT_TOKENS: Final = 8192
MAX_REQUEST_TOKENS: Final = 300_000

ORGANIZATION: Final = "org-fake"
DEFAULT_MODEL: Final = "text-embedding-3-small"

FaultKind = Literal[
    "500",
    "502",
    "503",
    "timeout",
    "malformed",
    "wrong_dimension",
    "missing_data",
    "429",
    "insufficient_quota",
]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))
# Refusals: decided before the limiter and deduct nothing, like a real 429.
_REFUSAL_FAULTS: Final = frozenset({"429", "insufficient_quota"})
_SERVER_ERRORS: Final = {
    "500": "The server had an error while processing your request. Sorry about that!",
    "502": "Bad gateway.",
    "503": "The server is overloaded or not ready yet.",
}

# Float arithmetic on refills can leave a bucket at 0.9999999 where 1 is meant; without this
# slack such a request would be refused with a 1 ms retry-after.
_EPSILON: Final = 1e-9

_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Deterministic stand-in for tiktoken: words and punctuation marks, at least 1 if non-empty."""
    if not text:
        return 0
    return max(1, len(_TOKEN_RE.findall(text)))


def format_duration(seconds: float) -> str:
    """OpenAI's duration format ("120ms", "1.5s", "6m0s"), rounded up to the millisecond.

    Rounding up means a client that waits the advertised time never arrives early.
    """
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


# --- vectors -------------------------------------------------------------------------------

_LEVELS: Final = [NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)]
_SQUARES: Final = [v * v for v in _LEVELS]


def embedding_bytes(text: str, seed: int, dimensions: int) -> bytes:
    """Little-endian float32 unit vector, deterministic in (text, seed); see module docstring."""
    raw = hashlib.shake_256(f"{seed}\0{text}".encode()).digest(dimensions)
    norm = math.sqrt(sum(map(_SQUARES.__getitem__, raw)))
    table = struct.pack("<256f", *[v / norm for v in _LEVELS])
    out = bytearray(4 * dimensions)
    # Byte k of every float comes from byte k of its table entry: four C-level passes.
    for k in range(4):
        out[k::4] = raw.translate(table[k::4])
    return bytes(out)


# --- rate limiting -------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """One continuously refilling bucket; ``now`` is passed in so the arithmetic is testable."""

    per_minute: int
    burst_seconds: float
    level: float
    updated: float

    @classmethod
    def full(cls, per_minute: int, burst_seconds: float, now: float) -> TokenBucket:
        return cls(per_minute, burst_seconds, per_minute * burst_seconds / 60.0, now)

    @classmethod
    def empty(cls, per_minute: int, burst_seconds: float, now: float) -> TokenBucket:
        """Spent: what the account's bucket holds just after someone used all of it."""
        return cls(per_minute, burst_seconds, 0.0, now)

    @property
    def capacity(self) -> float:
        return self.per_minute * self.burst_seconds / 60.0

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.per_minute / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds ``amount`` (0 if it already does)."""
        missing = amount - self.level
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def seconds_to_full(self) -> float:
        return max(0.0, self.capacity - self.level) / self.rate

    def remaining(self) -> int:
        return max(0, math.floor(self.level + _EPSILON))


@dataclass(frozen=True)
class _Admission:
    admitted: bool
    limited_by: Literal["requests", "tokens", ""] = ""
    wait: float = 0.0  # seconds until this request would be admitted
    too_large: bool = False


class _Limiter:
    """OpenAI's two buckets: a request is admitted only if both can pay; a refusal pays nothing."""

    def __init__(self, rpm: int, tpm: int, burst_seconds: float, now: float,
                 empty: bool = False) -> None:
        if rpm * burst_seconds / 60.0 < 1 or tpm * burst_seconds / 60.0 < 1:
            raise ValueError("rpm and tpm times burst_seconds/60 must each be at least 1")
        make = TokenBucket.empty if empty else TokenBucket.full
        self.requests = make(rpm, burst_seconds, now)
        self.tokens = make(tpm, burst_seconds, now)

    def admit(self, tokens: int, now: float) -> _Admission:
        self.requests.refill(now)
        self.tokens.refill(now)
        if tokens > self.tokens.capacity:
            return _Admission(False, "tokens", math.inf, too_large=True)
        request_wait = self.requests.wait_for(1)
        token_wait = self.tokens.wait_for(tokens)
        if request_wait > 0 or token_wait > 0:
            # Name the bucket that keeps the request out longest, so its retry-after is enough.
            if request_wait >= token_wait:
                return _Admission(False, "requests", request_wait)
            return _Admission(False, "tokens", token_wait)
        self.requests.level -= 1
        self.tokens.level -= tokens
        return _Admission(True)

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.requests.per_minute),
            "x-ratelimit-limit-tokens": str(self.tokens.per_minute),
            "x-ratelimit-remaining-requests": str(self.requests.remaining()),
            "x-ratelimit-remaining-tokens": str(self.tokens.remaining()),
            "x-ratelimit-reset-requests": format_duration(self.requests.seconds_to_full()),
            "x-ratelimit-reset-tokens": format_duration(self.tokens.seconds_to_full()),
        }


# --- stats ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeStats:
    """A snapshot of what the server did since start or the last reset.

    Times are ``time.monotonic()`` of the server process (``*_wall`` are ``time.time()``);
    ``first_request_at`` is when the first embeddings request arrived, ``last_response_at``
    when the last response started to be written (after its latency);
    ``tokens_at_first_request`` what the token bucket held when the first request arrived
    (its capacity when it started full and the first request came later; less when it
    started empty, ``start_empty``).
    """

    rpm: int
    tpm: int
    burst_seconds: float
    requests: int = 0  # every embeddings request, including refused and hung ones
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0  # 429 responses: limiter refusals and injected 429s
    hangs: int = 0  # "timeout" faults: requests that never get a response
    tokens_admitted: int = 0  # deducted by the limiter, whatever happened afterwards
    tokens_served: int = 0  # in 200 responses, including ones with injected bad data
    inputs_served: int = 0
    first_request_at: float | None = None
    last_response_at: float | None = None
    first_request_wall: float | None = None
    last_response_wall: float | None = None
    admitted: tuple[tuple[int, int], ...] = ()  # (inputs, tokens) per admitted request
    faults_injected: dict[str, int] = field(default_factory=dict)
    start_empty: bool = False
    tokens_at_first_request: float | None = None

    @property
    def token_capacity(self) -> float:
        return self.tpm * self.burst_seconds / 60.0

    @property
    def elapsed_seconds(self) -> float:
        if self.first_request_at is None or self.last_response_at is None:
            return 0.0
        return max(0.0, self.last_response_at - self.first_request_at)

    def allowed_tokens(self, elapsed_seconds: float | None = None) -> float:
        """The most tokens the limiter can admit in ``elapsed_seconds`` from the first
        request: what the bucket held then (full unless it started empty) plus the refill.

        Defaults to first request .. last response. Uses the current limits, so it is only
        meaningful when ``set_limits`` was not called during the measured run.
        """
        if elapsed_seconds is None:
            elapsed_seconds = self.elapsed_seconds
        start = self.tokens_at_first_request
        if start is None:
            start = 0.0 if self.start_empty else self.token_capacity
        return start + self.tpm / 60.0 * elapsed_seconds

    def utilisation(self) -> float:
        """Ceiling utilisation: tokens served / ``allowed_tokens()``."""
        return self.tokens_served / self.allowed_tokens()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "burst_seconds": self.burst_seconds,
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rate_limited": self.rate_limited,
            "hangs": self.hangs,
            "tokens_admitted": self.tokens_admitted,
            "tokens_served": self.tokens_served,
            "inputs_served": self.inputs_served,
            "first_request_at": self.first_request_at,
            "last_response_at": self.last_response_at,
            "first_request_wall": self.first_request_wall,
            "last_response_wall": self.last_response_wall,
            "admitted": [list(pair) for pair in self.admitted],
            "faults_injected": dict(self.faults_injected),
            "start_empty": self.start_empty,
            "tokens_at_first_request": self.tokens_at_first_request,
            # Derived, for clients that only have the JSON.
            "token_capacity": self.token_capacity,
            "elapsed_seconds": self.elapsed_seconds,
            "allowed_tokens": self.allowed_tokens(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeStats:
        """Rebuild a snapshot from ``GET /_fake/stats`` (derived keys are recomputed)."""
        return cls(
            rpm=data["rpm"],
            tpm=data["tpm"],
            burst_seconds=data["burst_seconds"],
            requests=data["requests"],
            by_status={int(k): v for k, v in data["by_status"].items()},
            rate_limited=data["rate_limited"],
            hangs=data["hangs"],
            tokens_admitted=data["tokens_admitted"],
            tokens_served=data["tokens_served"],
            inputs_served=data["inputs_served"],
            first_request_at=data["first_request_at"],
            last_response_at=data["last_response_at"],
            first_request_wall=data["first_request_wall"],
            last_response_wall=data["last_response_wall"],
            admitted=tuple((int(a), int(b)) for a, b in data["admitted"]),
            faults_injected=dict(data["faults_injected"]),
            start_empty=bool(data.get("start_empty", False)),
            tokens_at_first_request=data.get("tokens_at_first_request"),
        )


# --- requests and replies ------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # latency, slept outside any lock
    hang: bool = False  # "timeout" fault: wait hang_seconds, then close without a response
    inputs: int = 0
    tokens: int = 0
    embeddings: bool = False  # counts in the embeddings stats


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def _json_reply(status: int, payload: object) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


@dataclass(frozen=True)
class _EmbeddingRequest:
    texts: list[str]
    tokens: int
    model: str
    dimensions: int
    encoding_format: Literal["float", "base64"]


def _markers(value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(m, str) and m for m in items):
        raise ValueError("expected a non-empty string or a list of them")
    return cast(list[str], items)


class FakeOpenAI:
    """OpenAI-compatible embeddings server on 127.0.0.1 with an exact limiter and faults.

    ``latency`` and ``jitter`` are seconds: every 200 waits ``latency + uniform(0, jitter)``.
    ``start_empty=True``: both buckets start spent (and ``reset()`` empties them again), as
    the account is when the previous Job has just used it.
    ``api_key=None`` accepts any bearer key. ``port=0`` picks a free port; after ``stop()``,
    ``start()`` binds the same port again, so a test can simulate an outage.
    """

    def __init__(
        self,
        rpm: int = 3000,
        tpm: int = 1_000_000,
        burst_seconds: float = 60.0,
        latency: float = 0.0,
        jitter: float = 0.0,
        dimensions: int = 1536,
        api_key: str | None = None,
        seed: int = 0,
        *,
        hang_seconds: float = 30.0,
        port: int = 0,
        start_empty: bool = False,
    ) -> None:
        self.latency = latency
        self.start_empty = start_empty
        self.jitter = jitter
        self.dimensions = dimensions
        self.api_key = api_key
        self.seed = seed
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random(seed)
        self._request_ids = 0
        self._hang_seconds = hang_seconds
        self._limiter = _Limiter(rpm, tpm, burst_seconds, time.monotonic(), start_empty)
        self._stats = FakeStats(rpm, tpm, burst_seconds, start_empty=start_empty)
        self._admitted: list[tuple[int, int]] = []
        self._fail_queue: deque[list[Any]] = deque()  # [kind, remaining]
        self._error_rate = 0.0
        self._error_kind: FaultKind = "500"
        self._poison: set[str] = set()
        self._wrong_dimension_markers: set[str] = set()

    # --- lifecycle ---

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits up to one poll interval; 20 ms keeps fixture teardown quick.
            kwargs={"poll_interval": 0.02},
            name=f"fake-openai-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping for latency or a hang
        server.shutdown()
        server.close_all_connections()  # keep-alive handlers would otherwise block in read
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """Where the ``/_fake/...`` control endpoints live."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``OpenAI(base_url=...)``."""
        return f"{self.root_url}/v1"

    # --- faults and limits ---

    @property
    def hang_seconds(self) -> float:
        return self._hang_seconds

    @hang_seconds.setter
    def hang_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("hang_seconds must be >= 0")
        self._hang_seconds = seconds

    def fail_next(self, n: int, kind: FaultKind = "500") -> None:
        """The next ``n`` valid embeddings requests fail with ``kind`` (queued after earlier calls).

        A request refused by the limiter does not use up a server-side fault: the fault hits
        the next admitted request.
        """
        _check_kind(kind)
        if n < 0:
            raise ValueError("n must be >= 0")
        if n:
            with self._lock:
                self._fail_queue.append([kind, n])

    def set_error_rate(self, p: float, kind: FaultKind = "500") -> None:
        """Each valid request fails with ``kind`` with probability ``p`` (seeded, reproducible)."""
        _check_kind(kind)
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be in [0, 1]")
        with self._lock:
            self._error_rate, self._error_kind = p, kind

    def poison(self, marker: str) -> None:
        """Requests with any input containing ``marker`` get a 400 that does not name the input."""
        with self._lock:
            self._poison.add(marker)

    def wrong_dimension_for(self, marker: str) -> None:
        """Inputs containing ``marker`` get vectors one dimension short (the rest are fine)."""
        with self._lock:
            self._wrong_dimension_markers.add(marker)

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_queue.clear()
            self._error_rate, self._error_kind = 0.0, "500"
            self._poison.clear()
            self._wrong_dimension_markers.clear()

    def set_limits(
        self, rpm: int | None = None, tpm: int | None = None, burst_seconds: float | None = None
    ) -> None:
        """Change limits; both buckets restart full, as if the server had just started."""
        with self._lock:
            old = self._limiter
            rpm = old.requests.per_minute if rpm is None else rpm
            tpm = old.tokens.per_minute if tpm is None else tpm
            burst = old.requests.burst_seconds if burst_seconds is None else burst_seconds
            self._limiter = _Limiter(rpm, tpm, burst, time.monotonic())
            self._stats = replace(self._stats, rpm=rpm, tpm=tpm, burst_seconds=burst)

    def reset(self, empty: bool | None = None) -> None:
        """Clear faults and stats and refill both buckets, or empty them (``empty``; default:
        as the server started); limits stay."""
        self.clear_faults()
        empty = self.start_empty if empty is None else empty
        with self._lock:
            limiter = self._limiter
            rpm, tpm = limiter.requests.per_minute, limiter.tokens.per_minute
            burst = limiter.requests.burst_seconds
            self._limiter = _Limiter(rpm, tpm, burst, time.monotonic(), empty)
            self._stats = FakeStats(rpm, tpm, burst, start_empty=empty)
            self._admitted = []

    def stats(self) -> FakeStats:
        with self._lock:
            return replace(
                self._stats,
                by_status=dict(self._stats.by_status),
                faults_injected=dict(self._stats.faults_injected),
                admitted=tuple(self._admitted),
            )

    def faults(self) -> dict[str, Any]:
        """The pending fault configuration, as JSON-friendly data."""
        with self._lock:
            return {
                "fail_next": [{"kind": k, "n": n} for k, n in self._fail_queue],
                "error_rate": {"p": self._error_rate, "kind": self._error_kind},
                "poison": sorted(self._poison),
                "wrong_dimension_for": sorted(self._wrong_dimension_markers),
                "hang_seconds": self._hang_seconds,
            }

    # --- request handling (called from handler threads) ---

    def _wait(self, seconds: float) -> None:
        """Sleep that ends early on ``stop()``, so no handler outlives the server for long."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _route(self, method: str, path: str, authorization: str | None, body: bytes) -> _Reply:
        path = path.split("?", 1)[0].rstrip("/")
        if method == "POST" and path == "/v1/embeddings":
            return self._embeddings(authorization, body)
        try:
            if method == "GET" and path == "/_fake/stats":
                return _json_reply(200, self.stats().to_dict())
            if method == "GET" and path == "/_fake/faults":
                return _json_reply(200, self.faults())
            if method == "POST" and path == "/_fake/reset":
                empty = _json_object(body).get("empty")
                self.reset(None if empty is None else bool(empty))
                return _json_reply(200, {"ok": True})
            if method == "POST" and path == "/_fake/faults":
                self._apply_faults(_json_object(body))
                return _json_reply(200, {"ok": True, "faults": self.faults()})
            if method == "POST" and path == "/_fake/limits":
                self.set_limits(**_json_object(body))
                return _json_reply(200, {"ok": True, "limits": self.stats().to_dict()})
        except (ValueError, TypeError, KeyError) as exc:
            return _Reply(400, _error_body(f"Bad control request: {exc}", "invalid_request_error"))
        message = f"Invalid URL ({method} {path})"
        return _Reply(404, _error_body(message, "invalid_request_error"))

    def _apply_faults(self, spec: dict[str, Any]) -> None:
        unknown = set(spec) - {
            "clear",
            "hang_seconds",
            "fail_next",
            "error_rate",
            "poison",
            "wrong_dimension_for",
        }
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        if spec.get("clear"):
            self.clear_faults()
        if "hang_seconds" in spec:
            self.hang_seconds = float(spec["hang_seconds"])
        if "fail_next" in spec:
            item = spec["fail_next"]
            self.fail_next(int(item["n"]), item.get("kind", "500"))
        if "error_rate" in spec:
            item = spec["error_rate"]
            self.set_error_rate(float(item["p"]), item.get("kind", "500"))
        if "poison" in spec:
            for marker in _markers(spec["poison"]):
                self.poison(marker)
        if "wrong_dimension_for" in spec:
            for marker in _markers(spec["wrong_dimension_for"]):
                self.wrong_dimension_for(marker)

    def _embeddings(self, authorization: str | None, body: bytes) -> _Reply:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self._request_ids += 1
            request_id = f"req_fake_{self._request_ids:08d}"
            s = self._stats
            first = s.first_request_at is None
            if first:
                self._limiter.tokens.refill(now)
            self._stats = replace(
                s,
                requests=s.requests + 1,
                first_request_at=now if first else s.first_request_at,
                first_request_wall=wall if first else s.first_request_wall,
                tokens_at_first_request=self._limiter.tokens.level if first
                else s.tokens_at_first_request,
            )
        reply = self._embeddings_reply(authorization, body, now)
        reply.embeddings = True
        reply.headers["x-request-id"] = request_id
        return reply

    def _embeddings_reply(self, authorization: str | None, body: bytes, now: float) -> _Reply:
        auth_error = self._check_auth(authorization)
        if auth_error is not None:
            return _Reply(401, auth_error)
        try:
            request = self._parse(body)
        except _BadRequest as bad:
            error = _error_body(bad.message, "invalid_request_error", bad.param, bad.code)
            return _Reply(400, error)

        with self._lock:
            if any(m in text for m in self._poison for text in request.texts):
                message = "Invalid input: one of the inputs could not be processed."
                return _Reply(400, _error_body(message, "invalid_request_error", "input"))
            wrong_markers = tuple(self._wrong_dimension_markers)
            fault, queued = self._pending_fault()
            if fault in _REFUSAL_FAULTS:
                self._consume_fault(fault, queued)
                return self._injected_refusal(fault, request)
            admission = self._limiter.admit(request.tokens, now)
            headers = self._limiter.headers()
            if not admission.admitted:
                return self._refusal(admission, request, headers)
            if fault is not None:
                self._consume_fault(fault, queued)
            self._admitted.append((len(request.texts), request.tokens))
            s = self._stats
            self._stats = replace(s, tokens_admitted=s.tokens_admitted + request.tokens)
            delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)

        if fault == "timeout":
            return _Reply(0, headers=headers, hang=True)
        if fault in _SERVER_ERRORS:
            error = _error_body(_SERVER_ERRORS[fault], "server_error")
            return _Reply(int(fault), error, headers)
        return _Reply(
            200,
            self._success_body(request, fault, wrong_markers),
            headers,
            delay=delay,
            inputs=len(request.texts),
            tokens=request.tokens,
        )

    def _check_auth(self, authorization: str | None) -> bytes | None:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _error_body(message, "invalid_request_error")
        if self.api_key is not None and key != self.api_key:
            message = f"Incorrect API key provided: {key[:6]}***. You can find your API key at "
            message += "https://platform.openai.com/account/api-keys."
            return _error_body(message, "invalid_request_error", None, "invalid_api_key")
        return None

    def _parse(self, body: bytes) -> _EmbeddingRequest:
        try:
            payload = json.loads(body)
        except ValueError:
            raise _BadRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)"
            ) from None
        if not isinstance(payload, dict):
            raise _BadRequest("The request body must be a JSON object.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("you must provide a model parameter", "model")
        raw_input = payload.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _BadRequest("'$.input' is invalid. Please check the API reference.", "input")
        if len(texts) > MAX_INPUTS:
            message = f"Too many inputs: {len(texts)} > {MAX_INPUTS}. Please send fewer inputs."
            raise _BadRequest(message, "input")
        if any(not t for t in texts):
            raise _BadRequest("'$.input' is invalid. Please check the API reference.", "input")
        counts = [count_tokens(t) for t in texts]
        longest = max(counts)
        if longest > MAX_INPUT_TOKENS:
            raise _BadRequest(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
                f"requested {longest} tokens ({longest} in your prompt; 0 for the completion). "
                "Please reduce your prompt; or completion length."
            )
        total = sum(counts)
        if total > MAX_REQUEST_TOKENS:
            message = f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request"
            raise _BadRequest(message, None, "max_tokens_per_request")
        dimensions = payload.get("dimensions", self.dimensions)
        if dimensions is None:
            dimensions = self.dimensions
        if type(dimensions) is not int or not 1 <= dimensions <= self.dimensions:
            message = f"Invalid 'dimensions': must be an integer in [1, {self.dimensions}]."
            raise _BadRequest(message, "dimensions")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            message = f"Invalid 'encoding_format': {encoding!r}. Expected 'float' or 'base64'."
            raise _BadRequest(message, "encoding_format")
        return _EmbeddingRequest(texts, total, model, dimensions, encoding)

    def _pending_fault(self) -> tuple[FaultKind | None, bool]:
        """The fault for this request and whether it came from the queue. Call under the lock."""
        if self._fail_queue:
            return self._fail_queue[0][0], True
        if self._error_rate and self._rng.random() < self._error_rate:
            return self._error_kind, False
        return None, False

    def _consume_fault(self, kind: FaultKind, queued: bool) -> None:
        """Call under the lock."""
        if queued:
            head = self._fail_queue[0]
            head[1] -= 1
            if head[1] <= 0:
                self._fail_queue.popleft()
        s = self._stats
        faults = dict(s.faults_injected)
        faults[kind] = faults.get(kind, 0) + 1
        self._stats = replace(s, faults_injected=faults, hangs=s.hangs + (kind == "timeout"))

    def _refusal(
        self, admission: _Admission, request: _EmbeddingRequest, headers: dict[str, str]
    ) -> _Reply:
        """The limiter's 429. Call under the lock (reads the buckets)."""
        tpm = self._limiter.tokens.per_minute
        where = f"for {request.model} in organization {ORGANIZATION}"
        if admission.too_large:
            message = (
                f"Request too large {where} on tokens per min (TPM): Limit {tpm}, Requested "
                f"{request.tokens}. The input or output tokens must be reduced in order to run "
                "successfully. Visit https://platform.openai.com/account/rate-limits to learn more."
            )
            # No retry-after: no amount of waiting makes this request fit.
            return _Reply(429, _error_body(message, "tokens", None, "rate_limit_exceeded"), headers)
        if admission.limited_by == "requests":
            bucket, unit, requested = self._limiter.requests, "requests per min (RPM)", 1
        else:
            bucket, unit, requested = self._limiter.tokens, "tokens per min (TPM)", request.tokens
        used = math.ceil(bucket.capacity - bucket.level - _EPSILON)
        message = (
            f"Rate limit reached {where} on {unit}: Limit {bucket.per_minute}, Used {used}, "
            f"Requested {requested}. Please try again in {format_duration(admission.wait)}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        body = _error_body(message, admission.limited_by, None, "rate_limit_exceeded")
        return _Reply(429, body, {**headers, **_retry_after(admission.wait)})

    def _injected_refusal(self, fault: FaultKind, request: _EmbeddingRequest) -> _Reply:
        """An injected 429; the buckets are only read. Call under the lock."""
        self._limiter.requests.refill(time.monotonic())
        self._limiter.tokens.refill(time.monotonic())
        headers = self._limiter.headers()
        if fault == "insufficient_quota":
            message = (
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            # No retry-after: waiting does not restore quota.
            body = _error_body(message, "insufficient_quota", None, "insufficient_quota")
            return _Reply(429, body, headers)
        rpm = self._limiter.requests.per_minute
        message = (
            f"Rate limit reached for {request.model} in organization {ORGANIZATION} on requests "
            f"per min (RPM): Limit {rpm}, Used {rpm}, Requested 1. Please try again in 1s."
        )
        body = _error_body(message, "requests", None, "rate_limit_exceeded")
        return _Reply(429, body, {**headers, **_retry_after(1.0)})

    def _success_body(
        self, request: _EmbeddingRequest, fault: FaultKind | None, wrong_markers: Sequence[str]
    ) -> bytes:
        data = []
        for index, text in enumerate(request.texts):
            dims = request.dimensions
            if fault == "wrong_dimension" or any(m in text for m in wrong_markers):
                dims -= 1
            vector = embedding_bytes(text, self.seed, dims)
            embedding: str | list[float]
            if request.encoding_format == "base64":
                embedding = base64.b64encode(vector).decode("ascii")
            else:
                embedding = array.array("f", vector).tolist()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if fault == "missing_data":
            data.pop()
        usage = {"prompt_tokens": request.tokens, "total_tokens": request.tokens}
        payload = {"object": "list", "data": data, "model": request.model, "usage": usage}
        body = json.dumps(payload).encode()
        if fault == "malformed":
            return body[: len(body) // 2]  # cut mid-document: valid UTF-8, invalid JSON
        return body

    def _record_response(self, reply: _Reply) -> None:
        """Count a response just before it is written, so a client never sees it uncounted."""
        if not reply.embeddings or reply.hang:
            return
        now, wall = time.monotonic(), time.time()
        with self._lock:
            s = self._stats
            by_status = dict(s.by_status)
            by_status[reply.status] = by_status.get(reply.status, 0) + 1
            ok = reply.status == 200
            self._stats = replace(
                s,
                by_status=by_status,
                rate_limited=s.rate_limited + (reply.status == 429),
                tokens_served=s.tokens_served + (reply.tokens if ok else 0),
                inputs_served=s.inputs_served + (reply.inputs if ok else 0),
                last_response_at=now,
                last_response_wall=wall,
            )


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")


def _retry_after(wait: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(wait - 1e-6))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000 - 1e-6))),
    }


def _json_object(body: bytes) -> dict[str, Any]:
    payload = json.loads(body or b"{}")
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


# --- HTTP plumbing -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when 50 clients connect at once.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are expected here; anything else is a bug.
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as the SDK's connection pool expects from OpenAI.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; Nagle plus delayed ACK would add ~40 ms to each.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):  # the client is gone; nothing left to flush to
            super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # Not needed by the SDK; refuse rather than desynchronise the connection.
            self.close_connection = True
            body = _error_body("Content-Length required", "invalid_request_error")
            self._write(_Reply(411, body))
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        reply = fake._route(self.command, self.path, self.headers.get("Authorization"), body)
        if reply.hang:
            fake._wait(fake.hang_seconds)
            self.close_connection = True  # no response at all, like a stalled upstream
            return
        fake._wait(reply.delay)
        fake._record_response(reply)
        self._write(reply)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown test output


# --- standalone ----------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m f1sandbox.fake_openai",
        description="Serve the fake OpenAI embeddings API until SIGTERM or SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--tpm", type=int, default=1_000_000)
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--start-empty", action="store_true",
                        help="both buckets start spent, as after a previous Job")
    args = parser.parse_args(None if argv is None else list(argv))

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake = FakeOpenAI(
        rpm=args.rpm,
        tpm=args.tpm,
        burst_seconds=args.burst_seconds,
        latency=args.latency_ms / 1000.0,
        jitter=args.jitter_ms / 1000.0,
        dimensions=args.dimensions,
        api_key=args.api_key,
        seed=args.seed,
        hang_seconds=args.hang_seconds,
        port=args.port,
        start_empty=args.start_empty,
    )
    with fake:
        print(json.dumps({"base_url": fake.base_url, "port": fake.port}), flush=True)
        # A timed wait so the signal handler gets to run promptly in the main thread.
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
