"""Deletion semantics: finalizers, collections, ownerReference GC, namespace termination."""

from __future__ import annotations

import pytest
from kubernetes import client as k
from kubernetes.client.exceptions import ApiException

from tests.support.kubeapi_fixtures import GROUP, PLURAL, VERSION, yacht_backfill


def owner_ref(obj: dict) -> dict:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_body(name: str, owner: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": {"app": "backfill"}}
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "worker:1", "command": ["true"]}],
                }
            },
        },
    }


def test_finalizers_hold_the_object_until_removed(k8s, crd, namespace):
    api = k.CustomObjectsApi(k8s)
    body = yacht_backfill("alpha", namespace)
    body["metadata"]["finalizers"] = ["f1cortex.io/cleanup"]
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    marked = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    assert marked["metadata"]["deletionTimestamp"]
    assert int(marked["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    # While it is being deleted, a new finalizer is refused but other edits are fine.
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "alpha",
            {"metadata": {"finalizers": ["f1cortex.io/cleanup", "another/one"]}},
        )
    assert error.value.status == 422
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"status": {"phase": "Deleting"}}
    )
    # A second delete changes nothing.
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    again = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    assert again["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    # Removing the last finalizer deletes it.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as error:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    assert error.value.status == 404


def test_delete_preconditions(k8s, namespace):
    core = k.CoreV1Api(k8s)
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    with pytest.raises(ApiException) as error:
        core.delete_namespaced_config_map(
            "cm",
            namespace,
            body=k.V1DeleteOptions(
                preconditions=k.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")
            ),
        )
    assert error.value.status == 409
    core.delete_namespaced_config_map(
        "cm",
        namespace,
        body=k.V1DeleteOptions(preconditions=k.V1Preconditions(uid=cm.metadata.uid)),
    )
    assert core.list_namespaced_config_map(namespace).items == []


def test_delete_collection_with_a_label_selector(k8s, namespace):
    core = k.CoreV1Api(k8s)
    for name, team in (("a", "red"), ("b", "red"), ("c", "blue")):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": {"team": team}}}
        )
    core.delete_collection_namespaced_config_map(namespace, label_selector="team=red")
    left = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    assert left == ["c"]


def test_owner_deletion_collects_dependents_recursively(k8s, crd, namespace):
    api = k.CustomObjectsApi(k8s)
    batch = k.BatchV1Api(k8s)
    core = k.CoreV1Api(k8s)
    owner = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("alpha", namespace)
    )
    keep = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("beta", namespace)
    )
    job = batch.create_namespaced_job(namespace, job_body("alpha-job", owner))
    grandchild = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job.metadata.name, "uid": job.metadata.uid},
    }
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "alpha-job-state", "ownerReferences": [owner_ref(grandchild)]}},
    )
    batch.create_namespaced_job(namespace, job_body("beta-job", keep))
    # Two owners: it survives while one of them exists.
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "shared", "ownerReferences": [owner_ref(owner), owner_ref(keep)]}},
    )

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")

    assert [j.metadata.name for j in batch.list_namespaced_job(namespace).items] == ["beta-job"]
    names = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
    assert names == ["shared"]


def test_orphan_propagation_keeps_dependents(k8s, crd, namespace):
    api = k.CustomObjectsApi(k8s)
    batch = k.BatchV1Api(k8s)
    owner = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("alpha", namespace)
    )
    batch.create_namespaced_job(namespace, job_body("alpha-job", owner))
    api.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", propagation_policy="Orphan"
    )
    job = batch.read_namespaced_job("alpha-job", namespace)
    assert job.metadata.owner_references is None


def test_namespace_deletion_terminates_its_contents(k8s, crd, kubeapi, namespace):
    api = k.CustomObjectsApi(k8s)
    core = k.CoreV1Api(k8s)
    body = yacht_backfill("held", namespace)
    body["metadata"]["finalizers"] = ["f1cortex.io/cleanup"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    core.delete_namespace(namespace)
    assert core.read_namespace(namespace).status.phase == "Terminating"
    assert core.list_namespaced_config_map(namespace).items == []
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "late"}})
    assert error.value.status == 403
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "held", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as error:
        core.read_namespace(namespace)
    assert error.value.status == 404


def test_crd_deletion_removes_the_resource_and_its_objects(k8s, crd, kubeapi, namespace):
    api = k.CustomObjectsApi(k8s)
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("alpha", namespace)
    )
    k.ApiextensionsV1Api(k8s).delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    with pytest.raises(ApiException) as error:
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert error.value.status == 404
    kubeapi.load_crd(crd)
    assert api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
