"""The operator's informers against the API emulator: a paged list, then the watch; a relist
when the watch's resourceVersion has expired (410 Gone); one namespace's list leaves the
others' objects alone; the Jobs of ours come the same way, and only those."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from f1backfill.admission import JobState
from f1backfill.builders.job import build_job
from f1backfill.controller.fleetcache import FleetCache, Table
from f1backfill.controller.informer import Informer, watched_backfills, watched_jobs
from f1backfill.controller.kube import Kube
from f1backfill.controller.observe import observe_backfill
from f1sandbox.kubeapi import KubeAPI
from tests.support.backfills import settings
from tests.support.kubeapi_fixtures import yacht_backfill
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class RecordingSink(Table):
    """The reconciler's table of backfills, recording what the informer told it."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: list[tuple[str | None, set[str]]] = []
        self.seen_items: list[tuple[str, str]] = []  # (name, resourceVersion)
        self.gone_names: list[str] = []

    def listed(self, namespace: str | None, items: dict) -> None:
        self.lists.append((namespace, {b.name for b in items.values()}))
        super().listed(namespace, items)

    def seen(self, key, item) -> None:
        self.seen_items.append((item.name, item.resource_version))
        super().seen(key, item)

    def gone(self, key) -> None:
        self.gone_names.append(self[key].name)
        super().gone(key)

    def names(self) -> set[str]:
        return {b.name for b in self.values()}


class CountingKube(Kube):
    """The real client, counting list pages, and able to hold the first watch back (a slow
    reconnect) until the test releases it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages = 0
        self.watches = 0
        self.release_watch = threading.Event()
        self.release_watch.set()

    def list_backfills_page(self, *args: Any) -> dict[str, Any]:
        self.pages += 1
        return super().list_backfills_page(*args)

    def watch_backfills(self, *args: Any) -> Iterator[dict[str, Any]]:
        self.watches += 1
        self.release_watch.wait(30)
        return super().watch_backfills(*args)


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
          **options: Any) -> tuple[Informer, RecordingSink]:
    sink = RecordingSink()
    informer = Informer(watched_backfills(kube), sink, namespaces, **options)
    informer.start(loop)
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
        wait_for(lambda: "yacht-2" in sink.gone_names,
                 message=lambda: f"{sink.seen_items} {sink.gone_names}")
        assert sink.names() == {f"yacht-{n}" for n in range(7)} - {"yacht-2"} | {"late"}
        patched = next(b for b in sink.values() if b.name == "yacht-1")
        assert patched.spec.priority == 900
        assert kube.pages == 3  # no list again: the watch carried it all
    finally:
        informer.stop()


def test_a_watch_event_of_a_version_already_cached_reuses_the_cached_object(api, kube, loop):
    api.create(yacht_backfill("aurora", "fleet"))
    informer, sink = start(kube, loop)
    cache = FleetCache()
    cache.backfills = sink
    try:
        wait_for(lambda: informer.synced)
        (uid,) = sink
        # Our own status write: the reconciler stores the response (on the event loop, as
        # the operator does); the watch brings the same version again, in whichever order,
        # which must not leave a second parsed copy.
        body = api.patch("yachtbackfills", "aurora", {"status": {"phase": "Queued"}},
                         namespace="fleet", subresource="status")
        stored = asyncio.run_coroutine_threadsafe(_on_loop(cache.apply_backfill, body),
                                                  loop).result(5)
        wait_for(lambda: ("aurora", body["metadata"]["resourceVersion"]) in sink.seen_items,
                 message="the watch event of the status write")
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # delivered
        assert sink[uid] is stored
    finally:
        informer.stop()


async def _on_loop(function, *args):
    return function(*args)


def test_the_jobs_informer_holds_the_jobs_of_ours_only(api, kube, loop):
    owner = observe_backfill(api.create(yacht_backfill("aurora", "fleet")))
    ours = build_job(owner, 1, settings())
    api.create(ours)
    api.create({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "someone-elses", "namespace": "fleet"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "busybox"}]}}}})
    sink = Table()
    informer = Informer(watched_jobs(kube), sink, ("fleet",))
    informer.start(loop)
    try:
        wait_for(lambda: informer.synced)
        assert list(sink) == [("fleet", ours["metadata"]["name"])]
        api.patch("jobs", ours["metadata"]["name"], {"status": {"active": 1}},
                  namespace="fleet", subresource="status")
        wait_for(lambda: sink[("fleet", ours["metadata"]["name"])].state is JobState.ACTIVE)
        api.delete("jobs", ours["metadata"]["name"], namespace="fleet")
        wait_for(lambda: not sink)
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
        kept = next(b for b in sink.values() if b.name == "kept")
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


def test_stop_closes_the_watches_at_once_and_logs_nothing_after(api, kube, loop, caplog):
    # A long server timeout: only closing the watch can end it promptly.
    informer, _ = start(kube, loop, ("fleet", "other"), watch_timeout=600)
    wait_for(lambda: informer.synced)
    wait_for(lambda: kube.watches >= 2)
    started = time.monotonic()
    informer.stop()
    for thread in informer._threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in informer._threads)
    assert time.monotonic() - started < 5
    assert not [r for r in caplog.records if r.name.endswith("informer")
                and r.levelname in ("WARNING", "ERROR")]
