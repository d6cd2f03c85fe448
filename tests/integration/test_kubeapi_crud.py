"""CRUD semantics of the API emulator, through the official kubernetes client."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client as k
from kubernetes.client.exceptions import ApiException

from tests.support.kubeapi_fixtures import GROUP, PLURAL, VERSION, yacht_backfill

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def custom(k8s):
    return k.CustomObjectsApi(k8s)


def create_yb(k8s, namespace, name="alpha", **spec):
    return custom(k8s).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill(name, namespace, **spec)
    )


def status_of(error: ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status"
    assert body["code"] == error.status
    return body


def test_create_fills_uid_resource_version_timestamp_and_generation(k8s, crd, namespace):
    first = create_yb(k8s, namespace, "alpha")
    second = create_yb(k8s, namespace, "beta")
    for obj in (first, second):
        meta = obj["metadata"]
        assert uuid.UUID(meta["uid"])
        assert meta["generation"] == 1
        assert meta["creationTimestamp"].endswith("Z")
        assert meta["namespace"] == namespace
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    # One counter for the whole server, as etcd's revision.
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert first["apiVersion"] == f"{GROUP}/{VERSION}"
    assert first["kind"] == "YachtBackfill"


def test_generation_counts_spec_changes_only(k8s, crd, namespace):
    obj = create_yb(k8s, namespace, priority=5)
    api = custom(k8s)
    labelled = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    assert labelled["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
    status = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"status": {"phase": "Queued"}}
    )
    assert status["metadata"]["generation"] == 1
    spec = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"spec": {"priority": 6}}
    )
    assert spec["metadata"]["generation"] == 2
    assert spec["metadata"]["uid"] == obj["metadata"]["uid"]
    assert spec["metadata"]["creationTimestamp"] == obj["metadata"]["creationTimestamp"]


def test_a_no_op_write_keeps_the_resource_version(k8s, crd, namespace):
    obj = create_yb(k8s, namespace, priority=5)
    same = custom(k8s).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", {"spec": {"priority": 5}}
    )
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_stale_resource_version_is_a_409_on_replace_and_patch(k8s, crd, namespace):
    api = custom(k8s)
    obj = create_yb(k8s, namespace, priority=5)
    stale_version = obj["metadata"]["resourceVersion"]
    obj["spec"]["priority"] = 6
    replaced = api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha", obj)
    assert replaced["spec"]["priority"] == 6
    assert replaced["metadata"]["generation"] == 2

    obj["spec"]["priority"] = 7  # still carries the old resourceVersion
    with pytest.raises(ApiException) as error:
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha", obj)
    assert error.value.status == 409
    body = status_of(error.value)
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]

    with pytest.raises(ApiException) as error:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "alpha",
            {"metadata": {"resourceVersion": stale_version}, "spec": {"priority": 8}},
        )
    assert error.value.status == 409
    current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    assert current["spec"]["priority"] == 6


def test_create_conflicts_and_generate_name(k8s, crd, namespace):
    create_yb(k8s, namespace, "alpha")
    with pytest.raises(ApiException) as error:
        create_yb(k8s, namespace, "alpha")
    assert error.value.status == 409
    assert status_of(error.value)["reason"] == "AlreadyExists"

    body = yacht_backfill("ignored", namespace)
    body["metadata"] = {"generateName": "gen-"}
    names = {
        custom(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)[
            "metadata"
        ]["name"]
        for _ in range(5)
    }
    assert len(names) == 5
    assert all(name.startswith("gen-") and len(name) == len("gen-") + 5 for name in names)


def test_list_has_kind_resource_version_and_both_scopes(k8s, crd, namespace, kubeapi):
    other = f"{namespace}-b"
    kubeapi.create_namespace(other)
    create_yb(k8s, namespace, "alpha")
    create_yb(k8s, other, "beta")
    api = custom(k8s)
    listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert listed["kind"] == "YachtBackfillList"
    assert listed["apiVersion"] == f"{GROUP}/{VERSION}"
    assert int(listed["metadata"]["resourceVersion"]) >= int(
        listed["items"][0]["metadata"]["resourceVersion"]
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["alpha"]
    everywhere = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert sorted(i["metadata"]["name"] for i in everywhere["items"]) == ["alpha", "beta"]

    jobs = k.BatchV1Api(k8s).list_job_for_all_namespaces()
    assert jobs.items == []
    pods = k.CoreV1Api(k8s).list_namespaced_pod(namespace)
    assert pods.kind == "PodList"


def test_list_pages_with_limit_and_continue(k8s, namespace):
    core = k.CoreV1Api(k8s)
    for index in range(7):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"cm-{index}"}, "data": {"i": str(index)}}
        )
    names, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(namespace, limit=3, _continue=token)
        pages += 1
        names.extend(item.metadata.name for item in page.items)
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3
    assert names == [f"cm-{i}" for i in range(7)]


def test_namespace_must_exist_and_namespaces_are_served(k8s, kubeapi):
    core = k.CoreV1Api(k8s)
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert error.value.status == 404
    assert status_of(error.value)["message"] == 'namespaces "nowhere" not found'

    assert core.read_namespace("default").status.phase == "Active"
    core.create_namespace({"metadata": {"name": "made-here"}})
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert {"default", "made-here"} <= set(names)
    made = core.read_namespace("made-here")
    assert made.metadata.labels["kubernetes.io/metadata.name"] == "made-here"
    core.create_namespaced_config_map("made-here", {"metadata": {"name": "x"}})


def test_status_subresource_isolation(k8s, crd, namespace):
    api = custom(k8s)
    create_yb(k8s, namespace, priority=5)
    # A write to the main resource leaves the status alone...
    patched = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "alpha",
        {"spec": {"priority": 6}, "status": {"phase": "Hacked"}},
    )
    assert "status" not in patched
    # ...and a write to /status changes only the status.
    patched = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "alpha",
        {
            "spec": {"priority": 999},
            "metadata": {"labels": {"x": "y"}},
            "status": {"phase": "Running"},
        },
    )
    assert patched["status"] == {"phase": "Running"}
    assert patched["spec"]["priority"] == 6
    assert "labels" not in patched["metadata"]
    full = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    full["spec"]["priority"] = 7
    full["status"] = {"phase": "Replaced-on-main"}
    replaced = api.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", full
    )
    assert replaced["status"] == {"phase": "Running"}
    assert replaced["spec"]["priority"] == 7
    # Status on create is dropped, as for every resource with a status subresource.
    body = yacht_backfill("beta", namespace)
    body["status"] = {"phase": "Preset"}
    assert "status" not in api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )


def test_job_status_is_a_subresource_too(k8s, namespace):
    batch = k.BatchV1Api(k8s)
    job = batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "job"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "main", "image": "busybox:1.36", "command": ["true"]}
                        ],
                    }
                }
            },
        },
    )
    assert job.spec.backoff_limit == 6  # defaulted as by the real server
    assert job.spec.template.metadata.labels["job-name"] == "job"
    assert job.status is None or job.status.succeeded is None
    batch.patch_namespaced_job_status("job", namespace, {"status": {"active": 1}})
    batch.patch_namespaced_job("job", namespace, {"status": {"active": 5}})
    assert batch.read_namespaced_job_status("job", namespace).status.active == 1


def test_merge_patch_and_json_patch_with_a_failing_test_op(k8s, crd, namespace):
    api = custom(k8s)
    obj = create_yb(k8s, namespace, priority=5)
    merged = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "alpha",
        {"spec": {"priority": None, "yachtName": "Renamed"}},
        _content_type=MERGE,
    )
    assert "priority" not in merged["spec"]
    assert merged["spec"]["yachtName"] == "Renamed"

    version = merged["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f1cortex.io/test"]},
        {"op": "replace", "path": "/spec/batchSize", "value": 50},
    ]
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alpha", ops, _content_type=JSON_PATCH
    )
    assert patched["metadata"]["finalizers"] == ["f1cortex.io/test"]
    assert patched["spec"]["batchSize"] == 50

    # The same ops again: the resourceVersion moved on, so the test op fails with 422.
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "alpha", ops, _content_type=JSON_PATCH
        )
    assert error.value.status == 422
    assert status_of(error.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "alpha",
            [{"op": "remove", "path": "/spec/nothing"}],
            _content_type=JSON_PATCH,
        )
    assert error.value.status == 422
    assert obj["metadata"]["uid"] == patched["metadata"]["uid"]


def test_strategic_merge_on_built_ins_and_415_on_custom_resources(k8s, crd, namespace):
    batch = k.BatchV1Api(k8s)
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "job"},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": "busybox:1.36",
                                "command": ["true"],
                                "env": [{"name": "A", "value": "1"}],
                            }
                        ],
                    }
                },
            },
        },
    )
    # The client sends a dict patch to a built-in as a strategic merge patch:
    # the env list merges by name instead of being replaced.
    patched = batch.patch_namespaced_job(
        "job",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}
                }
            }
        },
    )
    env = {e.name: e.value for e in patched.spec.template.spec.containers[0].env}
    assert env == {"A": "1", "B": "2"}
    assert patched.spec.template.spec.containers[0].image == "busybox:1.36"

    create_yb(k8s, namespace)
    with pytest.raises(ApiException) as error:
        custom(k8s).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "alpha",
            {"spec": {"priority": 1}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert error.value.status == 415


def test_crd_schema_defaults_prunes_and_validates(k8s, crd, namespace):
    api = custom(k8s)
    body = yacht_backfill("alpha", namespace)
    body["spec"]["unknownField"] = "dropped"
    obj = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert obj["spec"]["tier"] == "standard"
    assert obj["spec"]["batchSize"] == 100
    assert obj["spec"]["suspend"] is False
    assert "unknownField" not in obj["spec"]

    bad = yacht_backfill("beta", namespace, priority=5000, tier="gold")
    bad["spec"]["yachtId"] = "not-a-uuid"
    with pytest.raises(ApiException) as error:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad)
    assert error.value.status == 422
    body = status_of(error.value)
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert fields == {"spec.priority", "spec.tier", "spec.yachtId"}
    assert "should be less than or equal to 1000" in body["message"]

    with pytest.raises(ApiException) as error:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "alpha", {"spec": {"yachtId": str(uuid.uuid4())}}
        )
    assert error.value.status == 422
    assert "yachtId is immutable" in status_of(error.value)["message"]

    missing = yacht_backfill("gamma", namespace)
    del missing["spec"]["yachtId"]
    with pytest.raises(ApiException) as error:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, missing)
    assert "spec.yachtId: Required value" in status_of(error.value)["message"]


def test_strict_field_validation_refuses_unknown_fields_by_name(k8s, crd, namespace):
    # kubectl apply's default (fieldValidation=Strict): refused, not silently pruned.
    body = yacht_backfill("alpha", namespace)
    body["spec"]["batchsize"] = 10
    with pytest.raises(ApiException) as error:
        custom(k8s).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    assert error.value.status == 400
    assert 'strict decoding error: unknown field "spec.batchsize"' in status_of(error.value)[
        "message"
    ]
    del body["spec"]["batchsize"]
    body["spec"]["priority"] = None  # a null of a known field is dropped, not refused
    created = custom(k8s).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    assert "priority" not in created["spec"]


def test_names_and_labels_are_validated(k8s, namespace):
    core = k.CoreV1Api(k8s)
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "Bad_Name"}})
    assert error.value.status == 422
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "ok", "labels": {"yacht": "M/Y Lady Grace"}}}
        )
    assert error.value.status == 422


def test_secrets_fold_string_data_into_data(k8s, namespace):
    core = k.CoreV1Api(k8s)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"},
            "data": {"user": base64.b64encode(b"admin").decode()},
        },
    )
    secret = core.read_namespaced_secret("creds", namespace)
    assert secret.string_data is None
    assert base64.b64decode(secret.data["password"]) == b"s3cret"
    assert base64.b64decode(secret.data["user"]) == b"admin"
    assert secret.type == "Opaque"


def test_errors_are_kubernetes_status_objects(k8s, crd, namespace):
    api = custom(k8s)
    with pytest.raises(ApiException) as error:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "absent")
    body = status_of(error.value)
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{PLURAL}.{GROUP} "absent" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "absent", "group": GROUP, "kind": PLURAL},
    }
    with pytest.raises(ApiException) as error:
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, "unknownthings")
    assert error.value.status == 404
    assert status_of(error.value)["reason"] == "NotFound"


def test_in_process_inspection(kubeapi, k8s, crd, namespace):
    create_yb(k8s, namespace, "alpha")
    assert [o["metadata"]["name"] for o in kubeapi.objects("yachtbackfills", namespace)] == [
        "alpha"
    ]
    assert kubeapi.get("yb", "alpha", namespace)["spec"]["tier"] == "standard"
    kubeapi.patch(
        "yachtbackfills",
        "alpha",
        {"status": {"phase": "Queued"}},
        namespace=namespace,
        subresource="status",
    )
    fetched = custom(k8s).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
    assert fetched["status"] == {"phase": "Queued"}
    kubeapi.delete("yachtbackfills", "alpha", namespace)
    assert kubeapi.objects("YachtBackfill") == []
    assert kubeapi.request_counts()["POST"] >= 1


def test_load_crd_from_a_yaml_file_and_apply_objects(kubeapi, k8s, tmp_path):
    import yaml

    from tests.support.kubeapi_fixtures import test_crd

    path = tmp_path / "crds.yaml"
    path.write_text("---\n" + yaml.safe_dump(test_crd()) + "---\n")
    loaded = kubeapi.load_crd(path)
    assert [crd["metadata"]["name"] for crd in loaded] == [f"{PLURAL}.{GROUP}"]
    body = yacht_backfill("alpha", "default")
    obj = kubeapi.apply(body)
    assert obj["metadata"]["generation"] == 1
    again = kubeapi.apply({**body, "status": {"phase": "Queued"}})
    assert again["metadata"]["uid"] == obj["metadata"]["uid"]
    assert again["status"] == {"phase": "Queued"}
    assert custom(k8s).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"][0]["status"] == {
        "phase": "Queued"
    }
