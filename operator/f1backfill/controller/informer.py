"""YachtBackfills, watched by one list-and-watch stream per namespace, outside kopf.

Why not a kopf handler: kopf keeps state for every object it watches (a memory per object,
and a queue and a worker task while its events flow), measured at about 12 KB per object,
117 MiB for 10,000 backfills, in an operator that must hold 10,000 in 250 MiB. The
reconciler needs none of it: it takes one decision for the whole fleet from a cache. So the
backfills come from an informer in the Kubernetes sense: list in pages, then watch from the
list's resourceVersion (bookmarks keep it fresh), list again when the server answers 410
Gone. Each body becomes an `ObservedBackfill` as it arrives, in the informer's thread, and
only that small object reaches the event loop. Jobs of ours (a handful) stay with kopf.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..admission import ObservedBackfill
from ..errors import WatchFailed
from .kube import Kube
from .observe import observe_backfill

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # a page at a time: never the whole fleet's JSON in memory at once
# As for kopf's watches (kopf#860): the server ends each watch after this long and we open
# a new one, so a half-dead connection cannot stall the informer for hours.
WATCH_TIMEOUT_SECONDS = 270
RETRY_SECONDS = (0.5, 30.0)  # first and longest wait after a failure


class BackfillSink(Protocol):
    """Where the informer delivers, always on the event loop's thread."""

    def known_backfill(self, uid: str) -> ObservedBackfill | None:
        """What the cache holds for `uid` (called from the informer's thread: a dict get)."""

    def backfills_listed(self, namespace: str | None,
                         backfills: dict[str, ObservedBackfill]) -> None:
        """Every backfill of `namespace` (all namespaces: None), by uid."""

    def backfill_seen(self, backfill: ObservedBackfill) -> None: ...

    def backfill_gone(self, uid: str) -> None: ...


class BackfillInformer:
    def __init__(self, kube: Kube, namespaces: tuple[str, ...] = (), *,
                 page_size: int = PAGE_SIZE,
                 watch_timeout: int = WATCH_TIMEOUT_SECONDS) -> None:
        self.kube = kube
        self.scopes: tuple[str | None, ...] = namespaces or (None,)
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self._listed: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def synced(self) -> bool:
        """Every namespace listed at least once: the cache holds the whole fleet."""
        return len(self._listed) == len(self.scopes)

    def start(self, loop: asyncio.AbstractEventLoop, sink: BackfillSink) -> None:
        for scope in self.scopes:
            thread = threading.Thread(target=self._run, args=(loop, sink, scope), daemon=True,
                                      name=f"informer-{scope or 'cluster'}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stops at the next event or bookmark; the threads are daemons, so a watch waiting
        on a quiet server does not hold the process up."""
        self._stop.set()

    # -- the thread --------------------------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, sink: BackfillSink,
             scope: str | None) -> None:
        def deliver(callback: Callable[..., None], *args: Any) -> None:
            loop.call_soon_threadsafe(callback, *args)

        version: str | None = None
        wait = RETRY_SECONDS[0]
        where = f"in namespace {scope}" if scope else "in all namespaces"
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(scope, sink, deliver)
                version = self._watch(scope, version, sink, deliver)
                wait = RETRY_SECONDS[0]
            except Exception as exc:  # the API server restarting, a network blip
                log.warning("watching YachtBackfills %s failed (%s); again in %.1fs", where,
                            _describe(exc), wait)
                self._stop.wait(wait)
                wait = min(wait * 2, RETRY_SECONDS[1])

    def _list(self, scope: str | None, sink: BackfillSink,
              deliver: Callable[..., None]) -> str:
        """The whole scope, page by page; returns the resourceVersion to watch from."""
        backfills: dict[str, ObservedBackfill] = {}
        token, version = None, None
        while True:
            page = self.kube.list_backfills_page(scope, limit=self.page_size, token=token)
            metadata = page.get("metadata") or {}
            # A paged list is one snapshot, at the first page's resourceVersion.
            version = version or str(metadata.get("resourceVersion") or "")
            for body in page.get("items") or []:
                backfill = self._observe(body, sink)
                backfills[backfill.uid] = backfill
            token = metadata.get("continue")
            if not token:
                break
        deliver(self._listed_callback(scope, sink), scope, backfills)
        return version

    def _listed_callback(self, scope: str | None, sink: BackfillSink
                         ) -> Callable[[str | None, dict[str, ObservedBackfill]], None]:
        def listed(namespace: str | None, backfills: dict[str, ObservedBackfill]) -> None:
            sink.backfills_listed(namespace, backfills)
            self._listed.add(scope)
        return listed

    def _watch(self, scope: str | None, version: str, sink: BackfillSink,
               deliver: Callable[..., None]) -> str | None:
        """Events until the server ends the watch; returns where to resume, or None when
        the version is too old to resume from (410 Gone: list again)."""
        for event in self.kube.watch_backfills(scope, version,
                                               timeout_seconds=self.watch_timeout):
            if self._stop.is_set():
                break
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    log.info("YachtBackfill watch expired (%s); listing again",
                             body.get("message"))
                    return None
                raise WatchFailed(f"{body.get('code')} {body.get('message')}")
            metadata = body.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                deliver(sink.backfill_gone, metadata["uid"])
            else:
                deliver(sink.backfill_seen, self._observe(body, sink))
        return version

    @staticmethod
    def _observe(body: dict[str, Any], sink: BackfillSink) -> ObservedBackfill:
        """The body as observed; the cached object when it is the same version (our own
        status writes come back through the watch)."""
        metadata = body["metadata"]
        known = sink.known_backfill(metadata["uid"])
        if known is not None and known.resource_version and \
                known.resource_version == str(metadata.get("resourceVersion") or ""):
            return known
        return observe_backfill(body)


def _describe(exc: Exception) -> str:
    """An API error without its headers and body (they say nothing a log reader needs)."""
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
