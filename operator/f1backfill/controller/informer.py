"""List-then-watch of one resource kind, outside kopf: the YachtBackfills and our Jobs.

Why not kopf's handlers: kopf keeps state for every object it watches (a memory per object,
and a queue and a worker task while its events flow), measured at about 12 KB per object,
117 MiB for 10,000 backfills, in an operator that must hold 10,000 in 250 MiB. The
reconciler needs none of it: it takes one decision for the whole fleet from a cache. So
each kind comes from an informer in the Kubernetes sense: list in pages, then watch from the
list's resourceVersion (bookmarks keep it fresh), list again when the server answers 410
Gone. Each body becomes an observed object as it arrives, in the informer's thread, and only
that small object reaches the event loop. Jobs come the same way, so there is one watch
mechanism, not two; kopf keeps what it does well: the operator's lifecycle, peering between
replicas and the liveness probe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ..admission import ObservedBackfill, ObservedJob
from ..errors import WatchFailed
from .kube import EventStream, Kube, describe_error
from .observe import observe_backfill, observe_job

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # a page at a time: never the whole fleet's JSON in memory at once
# As for kopf's watches (kopf#860): the server ends each watch after this long and we open
# a new one, so a half-dead connection cannot stall the informer for hours.
WATCH_TIMEOUT_SECONDS = 270
RETRY_SECONDS = (0.5, 30.0)  # first and longest wait after a failure

K = TypeVar("K")
T = TypeVar("T")
Body = Mapping[str, Any]


@dataclass(frozen=True)
class Watched(Generic[K, T]):
    """One resource kind as an informer sees it."""

    kind: str  # for log lines, e.g. "YachtBackfills"
    # (namespace or None for all, page size, continue token) -> a List body
    list_page: Callable[[str | None, int, str | None], Body]
    # (namespace or None, resourceVersion, timeout seconds) -> watch events (closeable)
    watch: Callable[[str | None, str, int], EventStream]
    key: Callable[[Body], K]  # of a body: how the cache finds the object
    observe: Callable[[Body], T | None]  # None: not one of ours, forget it
    version: Callable[[T], str]  # the resourceVersion an observed object was made from


class Sink(Protocol[K, T]):
    """Where an informer delivers; every call but `known` on the event loop's thread."""

    def known(self, key: K) -> T | None:
        """What is held for `key` (called from the informer's thread: a dict get)."""

    def listed(self, namespace: str | None, items: dict[K, T]) -> None:
        """Every object of `namespace` (of all namespaces: None), by key."""

    def seen(self, key: K, item: T) -> None: ...

    def gone(self, key: K) -> None: ...


def watched_backfills(kube: Kube) -> Watched[str, ObservedBackfill]:
    return Watched("YachtBackfills", kube.list_backfills_page, kube.watch_backfills,
                   key=lambda body: body["metadata"]["uid"], observe=observe_backfill,
                   version=lambda backfill: backfill.resource_version)


def watched_jobs(kube: Kube) -> Watched[tuple[str, str], ObservedJob]:
    return Watched("Jobs", kube.list_jobs_page, kube.watch_jobs,
                   key=lambda body: (body["metadata"].get("namespace", ""),
                                     body["metadata"]["name"]),
                   observe=observe_job, version=lambda job: job.resource_version)


class Informer(Generic[K, T]):
    def __init__(self, watched: Watched[K, T], sink: Sink[K, T],
                 namespaces: tuple[str, ...] = (), *, page_size: int = PAGE_SIZE,
                 watch_timeout: int = WATCH_TIMEOUT_SECONDS) -> None:
        self.watched = watched
        self.sink = sink
        self.scopes: tuple[str | None, ...] = namespaces or (None,)
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self._listed: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str | None, EventStream] = {}  # the open watch of each scope

    @property
    def synced(self) -> bool:
        """Every namespace listed at least once: the cache holds the whole kind."""
        return len(self._listed) == len(self.scopes)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for scope in self.scopes:
            thread = threading.Thread(
                target=self._run, args=(loop, scope), daemon=True,
                name=f"informer-{self.watched.kind.lower()}-{scope or 'cluster'}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stops now: the open watches are closed, and nothing the threads meet after this
        is logged (at shutdown the API server may already refuse us: a release being
        uninstalled deletes our RBAC while the pod terminates)."""
        self._stop.set()
        for stream in list(self._streams.values()):
            stream.close()

    # -- the thread --------------------------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, scope: str | None) -> None:
        def deliver(callback: Callable[..., None], *args: Any) -> None:
            loop.call_soon_threadsafe(callback, *args)

        version: str | None = None
        wait = RETRY_SECONDS[0]
        where = f"in namespace {scope}" if scope else "in all namespaces"
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(scope, deliver)
                version = self._watch(scope, version, deliver)
                wait = RETRY_SECONDS[0]
            except Exception as exc:  # the API server restarting, a network blip
                if self._stop.is_set():
                    break
                log.warning("watching %s %s failed (%s); again in %.1fs", self.watched.kind,
                            where, describe_error(exc), wait)
                self._stop.wait(wait)
                wait = min(wait * 2, RETRY_SECONDS[1])

    def _list(self, scope: str | None, deliver: Callable[..., None]) -> str:
        """The whole scope, page by page; returns the resourceVersion to watch from."""
        items: dict[K, T] = {}
        token, version = None, None
        while True:
            page = self.watched.list_page(scope, self.page_size, token)
            metadata = page.get("metadata") or {}
            # A paged list is one snapshot, at the first page's resourceVersion.
            version = version or str(metadata.get("resourceVersion") or "")
            for body in page.get("items") or []:
                key, item = self._observe(body)
                if item is not None:
                    items[key] = item
            token = metadata.get("continue")
            if not token:
                break
        deliver(self._listed_callback(scope), scope, items)
        return version

    def _listed_callback(self, scope: str | None) -> Callable[[str | None, dict[K, T]], None]:
        def listed(namespace: str | None, items: dict[K, T]) -> None:
            self.sink.listed(namespace, items)
            self._listed.add(scope)
        return listed

    def _watch(self, scope: str | None, version: str,
               deliver: Callable[..., None]) -> str | None:
        """Events until the server ends the watch; returns where to resume, or None when
        the version is too old to resume from (410 Gone: list again)."""
        stream = self._streams[scope] = self.watched.watch(scope, version, self.watch_timeout)
        if self._stop.is_set():  # stopped while the request was on its way
            stream.close()
        for event in stream:
            if self._stop.is_set():
                break
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    log.info("%s watch expired (%s); listing again", self.watched.kind,
                             body.get("message"))
                    return None
                raise WatchFailed(f"{body.get('code')} {body.get('message')}")
            metadata = body.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            key, item = (self.watched.key(body), None) if kind == "DELETED" \
                else self._observe(body)
            if item is None:
                deliver(self.sink.gone, key)
            else:
                deliver(self.sink.seen, key, item)
        return version

    def _observe(self, body: Body) -> tuple[K, T | None]:
        """The body as observed; the held object when it is the same version (our own
        writes come back through the watch)."""
        key = self.watched.key(body)
        known = self.sink.known(key)
        version = str(body["metadata"].get("resourceVersion") or "")
        if known is not None and version and self.watched.version(known) == version:
            return key, known
        return key, self.watched.observe(body)
