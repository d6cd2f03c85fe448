"""The operator's YachtBackfill informer against the API emulator: a paged list, then the
watch; a relist when the watch's resourceVersion has expired (410 Gone); one namespace's
list leaves the others' backfills alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from f1backfill.admission import ObservedBackfill
from f1backfill.controller.informer import BackfillInformer
from f1backfill.controller.kube import Kube
from f1backfill.controller.reconciler import FleetCache
from f1sandbox.kubeapi import KubeAPI
from tests.support.kubeapi_fixtures import yacht_backfill
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class RecordingSink:
    """A BackfillSink that keeps a FleetCache, as the reconciler does, and what it was told."""

    def __init__(self) -> None:
        self.cache = FleetCache()
        self.lists: list[tuple[str | None, set[str]]] = []
        self.seen: list[tuple[str, str]] = []  # (name, resourceVersion)
        self.gone: list[str] = []

    def known_backfill(self, uid: str) -> ObservedBackfill | None:
        return self.cache.backfills.get(uid)

    def backfills_listed(self, namespace: str | None,
                         backfills: dict[str, ObservedBackfill]) -> None:
        self.lists.append((namespace, {b.name for b in backfills.values()}))
        self.cache.replace_backfills(namespace, backfills)

    def backfill_seen(self, backfill: ObservedBackfill) -> None:
        self.seen.append((backfill.name, backfill.resource_version))
        self.cache.put_backfill(backfill)

    def backfill_gone(self, uid: str) -> None:
        self.gone.append(self.cache.backfills.pop(uid).name)

    def names(self) -> set[str]:
        return {b.name for b in self.cache.backfills.values()}


class CountingKube(Kube):
    """The real client, counting list pages, and able to hold the first watch back (a slow
    reconnect) until the test releases it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages = 0
        self.watches = 0
        self.release_watch = threading.Event()
        self.release_watch.set()

    def list_backfills_page(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.pages += 1
        return super().list_backfills_page(*args, **kwargs)

    def watch_backfills(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.watches += 1
        self.release_watch.wait(30)
        return super().watch_backfills(*args, **kwargs)


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    # A short history: a watch resuming from before the last 20 changes of a kind: 410 Gone.
    with KubeAPI(history_limit=20, namespaces=("default", "fleet", "other")) as server:
        server.load_crd(ROOT / "crds" / "yachtbackfill.yaml")
        yield server


@pytest.fixture
def kube(api: KubeAPI, tmp_path: Path) -> Iterator[CountingKube]:
    config = api.write_kubeconfig(tmp_path / "kubeconfig")
    client = kubernetes.config.new_client_from_config(config_file=str(config))
    try:
        yield CountingKube(api=client)
    finally:
        client.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The operator's event loop, where the informer delivers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def start(kube: Kube, loop: asyncio.AbstractEventLoop, namespaces: tuple[str, ...] = (),
          **options: Any) -> tuple[BackfillInformer, RecordingSink]:
    sink = RecordingSink()
    informer = BackfillInformer(kube, namespaces, **options)
    informer.start(loop, sink)
    return informer, sink


def test_the_first_list_comes_in_pages_and_then_the_watch_follows_every_change(api, kube,
                                                                               loop):
    for n in range(7):
        api.create(yacht_backfill(f"yacht-{n}", "fleet"))
    informer, sink = start(kube, loop, page_size=3)
    try:
        wait_for(lambda: informer.synced, message="the first list")
        assert kube.pages == 3  # 3 + 3 + 1
        assert sink.lists == [(None, {f"yacht-{n}" for n in range(7)})]

        api.create(yacht_backfill("late", "fleet"))
        api.patch("yachtbackfills", "yacht-1", {"spec": {"priority": 900}}, namespace="fleet")
        api.delete("yachtbackfills", "yacht-2", namespace="fleet")
        wait_for(lambda: "yacht-2" in sink.gone, message=lambda: f"{sink.seen} {sink.gone}")
        assert sink.names() == {f"yacht-{n}" for n in range(7)} - {"yacht-2"} | {"late"}
        patched = next(b for b in sink.cache.backfills.values() if b.name == "yacht-1")
        assert patched.spec.priority == 900
        assert kube.pages == 3  # no list again: the watch carried it all
    finally:
        informer.stop()


def test_a_watch_event_of_a_version_already_cached_reuses_the_cached_object(api, kube, loop):
    api.create(yacht_backfill("aurora", "fleet"))
    informer, sink = start(kube, loop)
    try:
        wait_for(lambda: informer.synced)
        before = next(iter(sink.cache.backfills.values()))
        # Our own status write: the reconciler caches the response; the watch brings the same
        # version again, which must not cost a second parsed copy.
        body = api.patch("yachtbackfills", "aurora", {"status": {"phase": "Queued"}},
                         namespace="fleet", subresource="status")
        sink.cache.apply_backfill(body)
        cached = sink.cache.backfills[before.uid]
        wait_for(lambda: sink.seen, message="the watch event of the status write")
        assert sink.cache.backfills[before.uid] is cached
    finally:
        informer.stop()


def test_an_expired_watch_lists_again_and_the_cache_matches_the_cluster(api, kube, loop):
    for name in ("kept", "deleted-meanwhile"):
        api.create(yacht_backfill(name, "fleet"))
    kube.release_watch.clear()  # the first watch waits: a slow reconnect
    informer, sink = start(kube, loop)
    try:
        wait_for(lambda: informer.synced)
        api.delete("yachtbackfills", "deleted-meanwhile", namespace="fleet")
        api.create(yacht_backfill("created-meanwhile", "fleet"))
        for n in range(25):  # more changes than the server's history of the kind keeps
            api.patch("yachtbackfills", "kept", {"metadata": {"labels": {"n": str(n)}}},
                      namespace="fleet")
        kube.release_watch.set()
        wait_for(lambda: len(sink.lists) == 2, message=lambda: f"lists: {sink.lists}")
        assert sink.names() == {"kept", "created-meanwhile"}
        kept = next(b for b in sink.cache.backfills.values() if b.name == "kept")
        assert kept.resource_version == api.get("yachtbackfills", "kept", "fleet")[
            "metadata"]["resourceVersion"]
        assert kube.watches >= 2  # the expired one, then one from the new list
        api.create(yacht_backfill("after", "fleet"))
        wait_for(lambda: "after" in sink.names())
    finally:
        informer.stop()


def test_an_informer_per_namespace_each_replacing_only_its_own(api, kube, loop):
    api.create(yacht_backfill("in-fleet", "fleet"))
    api.create(yacht_backfill("in-other", "other"))
    api.create(yacht_backfill("in-default", "default"))  # not watched
    informer, sink = start(kube, loop, ("fleet", "other"))
    try:
        wait_for(lambda: informer.synced)
        assert sink.names() == {"in-fleet", "in-other"}
        assert sorted(sink.lists) == [("fleet", {"in-fleet"}), ("other", {"in-other"})]
    finally:
        informer.stop()


def test_stop_ends_the_threads_at_the_next_event(api, kube, loop):
    informer, _ = start(kube, loop, watch_timeout=1)
    wait_for(lambda: informer.synced)
    informer.stop()
    deadline = time.monotonic() + 10
    for thread in informer._threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in informer._threads)
