"""Selectors on LIST and WATCH, and watch streams: events, resume, expiry, timeouts."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from kubernetes import client as k
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from f1sandbox.kubeapi import KubeAPI
from tests.support.kubeapi_fixtures import GROUP, PLURAL, VERSION, yacht_backfill
from tests.support.waiting import wait_for


def make_config_maps(core, namespace):
    for name, labels in (
        ("a", {"tier": "premium", "zone": "eu"}),
        ("b", {"tier": "standard", "zone": "us"}),
        ("c", {"tier": "enterprise"}),
        ("d", {}),
    ):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": labels}, "data": {"n": name}}
        )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=premium", ["a"]),
        ("tier==premium", ["a"]),
        ("tier!=premium", ["b", "c", "d"]),
        ("tier in (premium, enterprise)", ["a", "c"]),
        ("tier notin (premium,enterprise)", ["b", "d"]),
        ("zone", ["a", "b"]),
        ("!zone", ["c", "d"]),
        ("tier,zone=us", ["b"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selectors(k8s, namespace, selector, expected):
    core = k.CoreV1Api(k8s)
    make_config_maps(core, namespace)
    found = core.list_namespaced_config_map(namespace, label_selector=selector)
    assert [cm.metadata.name for cm in found.items] == expected


def test_field_selectors(k8s, kubeapi, namespace):
    core = k.CoreV1Api(k8s)
    make_config_maps(core, namespace)
    kubeapi.create_namespace("elsewhere")
    core.create_namespaced_config_map("elsewhere", {"metadata": {"name": "a"}})

    def names(**kwargs):
        return sorted(
            f"{cm.metadata.namespace}/{cm.metadata.name}"
            for cm in core.list_config_map_for_all_namespaces(**kwargs).items
        )

    assert names(field_selector="metadata.name=a") == ["elsewhere/a", f"{namespace}/a"]
    assert names(field_selector=f"metadata.name=a,metadata.namespace={namespace}") == [
        f"{namespace}/a"
    ]
    assert names(field_selector="metadata.namespace!=elsewhere,data.n=b") == [f"{namespace}/b"]
    assert names(field_selector="metadata.name=a", label_selector="zone=eu") == [f"{namespace}/a"]
    with pytest.raises(ApiException) as error:
        core.list_config_map_for_all_namespaces(label_selector="tier in premium")
    assert error.value.status == 400


def test_watch_streams_added_modified_deleted(k8s, namespace):
    core = k.CoreV1Api(k8s)
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("cm", namespace)
    events = []
    watcher = watch.Watch()
    for event in watcher.stream(
        core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=10
    ):
        events.append((event["type"], event["object"].data))
        if event["type"] == "DELETED":
            watcher.stop()
    assert events == [("ADDED", {"v": "1"}), ("MODIFIED", {"v": "2"}), ("DELETED", {"v": "2"})]


def test_watch_delivers_live_changes_to_every_matching_watcher(k8s, kubeapi, crd, namespace):
    api = k.CustomObjectsApi(k8s)
    seen: dict[str, list] = {"all": [], "labelled": []}

    def consume(key, **kwargs):
        watcher = watch.Watch()
        for event in watcher.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            timeout_seconds=10,
            **kwargs,
        ):
            seen[key].append((event["type"], event["object"]["metadata"]["name"]))
            if event["type"] == "DELETED":
                watcher.stop()

    threads = [
        threading.Thread(target=consume, args=("all",)),
        threading.Thread(
            target=consume, args=("labelled",), kwargs={"label_selector": "watched=yes"}
        ),
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: kubeapi.watch_count(PLURAL) >= 2, 5)
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("alpha", namespace)
    )
    # Starts matching the selector: ADDED for that watcher; stops matching: DELETED.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"metadata": {"labels": {"watched": "yes"}}}
    )
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"metadata": {"labels": {"watched": "no"}}}
    )
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    for thread in threads:
        thread.join(10)
    assert seen["all"] == [
        ("ADDED", "alpha"),
        ("MODIFIED", "alpha"),
        ("MODIFIED", "alpha"),
        ("DELETED", "alpha"),
    ]
    assert seen["labelled"] == [("ADDED", "alpha"), ("DELETED", "alpha")]


def test_watch_without_version_starts_with_existing_objects(k8s, namespace):
    core = k.CoreV1Api(k8s)
    make_config_maps(core, namespace)
    watcher = watch.Watch()
    events = []
    for event in watcher.stream(core.list_namespaced_config_map, namespace, timeout_seconds=10):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 4:
            watcher.stop()
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("ADDED", "d")]


def test_watch_resumes_and_expires_with_the_bounded_history(tmp_path):
    with KubeAPI(history_limit=5) as api:
        url = f"{api.url}/api/v1/namespaces/default/configmaps"
        first = api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cm-0", "namespace": "default"},
            }
        )
        for index in range(1, 4):
            api.create(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{index}", "namespace": "default"},
                }
            )
        since = first["metadata"]["resourceVersion"]
        lines = read_stream(f"{url}?watch=1&resourceVersion={since}&timeoutSeconds=0.3")
        assert [line["object"]["metadata"]["name"] for line in lines] == ["cm-1", "cm-2", "cm-3"]
        for index in range(4, 10):
            api.create(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{index}", "namespace": "default"},
                }
            )
        lines = read_stream(f"{url}?watch=true&resourceVersion={since}&timeoutSeconds=5")
        assert len(lines) == 1
        assert lines[0]["type"] == "ERROR"
        assert lines[0]["object"]["code"] == 410
        assert lines[0]["object"]["reason"] == "Expired"


def test_watch_timeout_and_bookmarks(tmp_path):
    with KubeAPI(bookmark_interval=0.2) as api:
        url = f"{api.url}/api/v1/namespaces/default/configmaps"
        started = time.monotonic()
        lines = read_stream(
            f"{url}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
            f"&resourceVersion={api.resource_version()}"
        )
        assert 0.9 < time.monotonic() - started < 3
        assert lines and all(line["type"] == "BOOKMARK" for line in lines)
        assert lines[0]["object"]["metadata"]["resourceVersion"] == str(api.resource_version())
        # sendInitialEvents: the objects, then a bookmark that ends the initial list.
        api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cm", "namespace": "default"},
            }
        )
        lines = read_stream(
            f"{url}?watch=true&allowWatchBookmarks=true&timeoutSeconds=0.1"
            "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        )
        assert lines[0]["type"] == "ADDED"
        assert lines[1]["object"]["metadata"]["annotations"] == {
            "k8s.io/initial-events-end": "true"
        }


def read_stream(url: str) -> list[dict]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]
