"""Publishing yachts' cache generations to the edge Worker's KV (edge/, docs/edge.md).

The edge caches search answers under keys that carry the yacht's generation, which it reads
from its KV namespace (`gen:{yacht_id}`), not from Redis. So whoever bumps a generation in
Redis (`f1backfill.generations`: the worker after each batch, the operator when a Job ends)
also writes the new value there, through Cloudflare's API:

    PUT {base}/accounts/{account}/storage/kv/namespaces/{namespace}/values/gen:{yacht_id}

with the API token as a Bearer credential. Only when the account, the namespace and the
token are all configured; otherwise nothing is published and nothing is said.

Like the bump, a publish is best effort and never fails a batch: a short timeout, every
failure counted in `f1_edge_generation_publish_failures_total`, the first of an outage
logged (and its end). After a failure, publishes pause for `OUTAGE_PAUSE_SECONDS` so that a
Cloudflare outage costs a worker's lanes one timeout per pause, not one per batch.

Cloudflare allows one write a second to a KV key, and a worker bumps after every batch: a
yacht's value is written at most once per `MIN_INTERVAL_SECONDS`. A value held back is
written by the next publish after that, or by `flush()` (the worker calls it as it exits,
through `Generations.close`), so the edge ends with the last value. Values only go up: a
lane that publishes generation 5 after another published 6 writes nothing.

The standard library's urllib, like the JWKS fetch of `frontdoor.auth`: the product
declares no HTTP client, and one PUT a second does not need one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter

from .constants import CLOUDFLARE_API

log = logging.getLogger(__name__)

EDGE_GENERATION_KEY: Final = "gen:{yacht_id}"
PUBLISH_FAILURES_METRIC: Final = "f1_edge_generation_publish_failures_total"
# One PUT, connection and answer together; a lane waits for it.
TIMEOUT_SECONDS: Final = 2.0
# Cloudflare KV: at most one write per second to one key.
MIN_INTERVAL_SECONDS: Final = 1.0
# After a failed publish, the next attempt waits this long (the value is kept meanwhile).
OUTAGE_PAUSE_SECONDS: Final = 30.0
# Cloudflare's error answers are small JSON; more than this is not read.
MAX_ERROR_BYTES: Final = 4096

Clock = Callable[[], float]
# (url, body, headers, timeout) -> HTTP status; raises OSError on a transport failure.
Put = Callable[[str, bytes, dict[str, str], float], int]


def publish_failures_counter(registry: CollectorRegistry) -> Counter:
    """The failure counter, in `registry` (the worker's or the operator's)."""
    return Counter(PUBLISH_FAILURES_METRIC,
                   "Cache generations not written to the edge's KV (Cloudflare API "
                   "unreachable or refusing)", registry=registry)


class PublishError(Exception):
    """Cloudflare did not store the value; the message is safe to log (no token)."""


class EdgeGenerations:
    """Writes yachts' generations to the edge's KV; a no-op unless `account_id`,
    `namespace_id` and `api_token` are all set.

    `base_url` is Cloudflare's API (tests point it at a local fake); `put` replaces the HTTP
    call and `clock` (monotonic seconds) the time (tests).
    """

    def __init__(self, account_id: str = "", namespace_id: str = "", api_token: str = "", *,
                 base_url: str = CLOUDFLARE_API, failures: Counter | None = None,
                 registry: CollectorRegistry | None = None, timeout: float = TIMEOUT_SECONDS,
                 put: Put | None = None, clock: Clock = time.monotonic) -> None:
        self._enabled = bool(account_id and namespace_id and api_token)
        self._values_url = (
            f"{base_url.rstrip('/')}/accounts/{urllib.parse.quote(account_id, safe='')}"
            f"/storage/kv/namespaces/{urllib.parse.quote(namespace_id, safe='')}/values/")
        self._headers = {"Authorization": f"Bearer {api_token}",
                         "Content-Type": "text/plain"}
        self._timeout = timeout
        self._put = put or http_put
        self._clock = clock
        self.failures = failures if failures is not None else publish_failures_counter(
            registry if registry is not None else CollectorRegistry())
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}  # the highest generation seen, by yacht
        self._written: dict[str, int] = {}  # the highest written
        self._next_write: dict[str, float] = {}  # not before (MIN_INTERVAL_SECONDS)
        self._writing: set[str] = set()  # a PUT under way
        self._paused_until = 0.0  # after a failure
        self._down = False  # within an outage: logged already

    @classmethod
    def from_settings(cls, settings: Any, failures: Counter) -> EdgeGenerations:
        """From the worker's or the operator's settings (their four CLOUDFLARE_* fields)."""
        return cls(settings.cloudflare_account_id, settings.cloudflare_kv_namespace_id,
                   settings.cloudflare_api_token, base_url=settings.cloudflare_api_base_url,
                   failures=failures)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def publish(self, yacht_id: str, generation: int) -> bool:
        """Make `generation` the edge's generation of the yacht. True when it was written
        now; False when publishing is off, held back (a later publish or `flush` writes
        it), already written, or failed (counted; logged at the first failure of an
        outage). Never raises."""
        if not self._enabled:
            return False
        with self._lock:
            self._latest[yacht_id] = max(generation, self._latest.get(yacht_id, generation))
            now = self._clock()
            if (yacht_id in self._writing or now < self._paused_until
                    or now < self._next_write.get(yacht_id, 0.0)):
                return False
        return self._write(yacht_id)

    def flush(self) -> None:
        """Write every value held back, now (at exit). Failures are counted and logged as
        in `publish`; never raises."""
        if not self._enabled:
            return
        with self._lock:
            held = [yacht for yacht, value in self._latest.items()
                    if value > self._written.get(yacht, -1) and yacht not in self._writing]
        for yacht in held:
            self._write(yacht)

    def _write(self, yacht_id: str) -> bool:
        with self._lock:
            value = self._latest[yacht_id]
            if value <= self._written.get(yacht_id, -1) or yacht_id in self._writing:
                return False
            self._writing.add(yacht_id)
            self._next_write[yacht_id] = self._clock() + MIN_INTERVAL_SECONDS
        try:
            self._store(yacht_id, value)
        except (PublishError, OSError, ValueError) as exc:
            self.failures.inc()
            with self._lock:
                self._writing.discard(yacht_id)
                self._paused_until = self._clock() + OUTAGE_PAUSE_SECONDS
                first, self._down = not self._down, True
            if first:
                log.warning("cannot publish cache generations to the edge's KV (%s); the edge "
                            "may serve results cached before this re-embed for up to a minute "
                            "longer. Failed publishes are counted in %s until Cloudflare "
                            "answers again", exc, PUBLISH_FAILURES_METRIC)
            return False
        with self._lock:
            self._writing.discard(yacht_id)
            self._written[yacht_id] = max(value, self._written.get(yacht_id, value))
            back, self._down = self._down, False
        if back:
            log.info("Cloudflare answers again: cache generations reach the edge's KV")
        return True

    def _store(self, yacht_id: str, value: int) -> None:
        key = urllib.parse.quote(EDGE_GENERATION_KEY.format(yacht_id=yacht_id), safe="")
        status = self._put(self._values_url + key, str(value).encode(), self._headers,
                           self._timeout)
        if status != 200:
            raise PublishError(f"Cloudflare's API answered HTTP {status}")

    def __repr__(self) -> str:  # never the token
        return f"EdgeGenerations(enabled={self._enabled})"


def http_put(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """PUT `body`; the HTTP status. Raises PublishError for an answer that is not a
    success, with Cloudflare's error messages (never the request's headers)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(MAX_ERROR_BYTES)
            return response.status
    except urllib.error.HTTPError as error:
        with error:
            detail = _errors(error.read(MAX_ERROR_BYTES))
        raise PublishError(f"Cloudflare's API answered HTTP {error.code}{detail}") from None
    except urllib.error.URLError as error:
        # Its message is the reason (refused, timed out), never the URL or headers.
        raise OSError(f"Cloudflare's API unreachable: {error.reason}") from None


def _errors(body: bytes) -> str:
    """Cloudflare's `errors[].message`, if the answer carries them."""
    try:
        errors = json.loads(body).get("errors") or []
        messages = [str(e.get("message"))[:200] for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    return f": {'; '.join(messages)}" if messages else ""
