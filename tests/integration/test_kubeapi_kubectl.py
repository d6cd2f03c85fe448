"""Discovery, CRD-driven serving and kubectl against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client as k

from f1sandbox.kubeapi import is_serving
from tests.support.kubeapi_fixtures import (
    GROUP,
    PEERING_CRDS,
    PLURAL,
    VERSION,
    test_crd,
    yacht_backfill,
)
from tests.support.waiting import wait_for

KOPF_CRDS = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/kopf"


def get_json(url: str, accept: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_discovery_documents(kubeapi):
    assert get_json(f"{kubeapi.url}/version")["major"] == "1"
    assert get_json(f"{kubeapi.url}/api")["versions"] == ["v1"]
    groups = {g["name"]: g for g in get_json(f"{kubeapi.url}/apis")["groups"]}
    assert {"batch", "coordination.k8s.io", "apiextensions.k8s.io", "events.k8s.io"} <= set(groups)
    assert groups["batch"]["preferredVersion"]["version"] == "v1"
    assert get_json(f"{kubeapi.url}/apis/batch")["name"] == "batch"

    core = {r["name"]: r for r in get_json(f"{kubeapi.url}/api/v1")["resources"]}
    assert {"namespaces", "events", "secrets", "configmaps", "pods", "serviceaccounts"} <= set(core)
    assert core["namespaces"]["namespaced"] is False
    assert core["configmaps"]["shortNames"] == ["cm"]
    batch = get_json(f"{kubeapi.url}/apis/batch/v1")
    assert batch["kind"] == "APIResourceList"
    jobs = {r["name"]: r for r in batch["resources"]}
    assert jobs["jobs"]["kind"] == "Job"
    assert jobs["jobs"]["singularName"] == "job"
    assert {"list", "watch", "patch", "create", "delete"} <= set(jobs["jobs"]["verbs"])
    assert jobs["jobs/status"]["verbs"] == ["get", "patch", "update"]
    # kubectl asks for aggregated discovery; a plain list answers it (kubectl falls back).
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    assert get_json(f"{kubeapi.url}/apis", aggregated)["kind"] == "APIGroupList"


def test_a_crd_makes_its_resource_discoverable(k8s, kubeapi, kubectl):
    assert GROUP not in {g["name"] for g in get_json(f"{kubeapi.url}/apis")["groups"]}
    created = k.ApiextensionsV1Api(k8s).create_custom_resource_definition(test_crd())
    established = {c.type: c.status for c in created.status.conditions}
    assert established == {"NamesAccepted": "True", "Established": "True"}
    resources = get_json(f"{kubeapi.url}/apis/{GROUP}/{VERSION}")["resources"]
    entry = next(r for r in resources if r["name"] == PLURAL)
    assert entry["kind"] == "YachtBackfill"
    assert entry["shortNames"] == ["yb"]
    assert entry["singularName"] == "yachtbackfill"
    assert entry["namespaced"] is True
    assert f"{PLURAL}/status" in {r["name"] for r in resources}
    listed = kubectl("api-resources", f"--api-group={GROUP}").stdout
    assert "yachtbackfills" in listed and "yb" in listed and "YachtBackfill" in listed


def test_kopf_peering_crds_are_served_once_applied(kubeapi, kubectl, tmp_path):
    kubectl("apply", "--validate=false", "-f", str(PEERING_CRDS))  # as the product ships them
    resources = {r["name"]: r for r in get_json(f"{kubeapi.url}/apis/kopf.dev/v1")["resources"]}
    assert resources["kopfpeerings"]["namespaced"] is True
    assert resources["clusterkopfpeerings"]["namespaced"] is False
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "default"},
                "status": {},
            }
        ),
    )
    assert kubeapi.get("clusterkopfpeerings", "default") is not None


def test_kubectl_get_shows_printer_columns(kubeapi, crd, namespace, kubectl):
    kubeapi.create(yacht_backfill("alpha", namespace))
    kubeapi.patch(
        PLURAL,
        "alpha",
        {"status": {"phase": "Running", "effectivePriority": 100, "progress": {"percent": 42}}},
        namespace=namespace,
        subresource="status",
    )
    kubeapi.create(yacht_backfill("beta", namespace))
    out = kubectl("get", "yachtbackfills", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "YACHT", "PRIORITY", "PHASE", "PROGRESS", "AGE"]
    assert out[1].split()[:5] == ["alpha", "Alpha", "100", "Running", "42"]
    assert out[2].split()[:2] == ["beta", "Beta"]
    assert out[2].split()[-1].endswith("s")  # the age, e.g. 0s
    # Short name, all namespaces, label selectors and JSON output work the same way.
    everywhere = kubectl("get", "yb", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert kubectl("get", "yb", "-n", namespace, "-l", "missing=label").stdout == ""
    items = json.loads(kubectl("get", "yb", "-n", namespace, "-o", "json").stdout)["items"]
    assert [i["metadata"]["name"] for i in items] == ["alpha", "beta"]


def test_kubectl_get_watch_prints_rows_as_they_change(kubeapi, crd, kubeconfig, tmp_path):
    kubeapi.create(yacht_backfill("alpha", "default"))
    process = subprocess.Popen(
        [
            "kubectl",
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={tmp_path}/cache",
            "get",
            "yb",
            "--watch",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 2, 10)
        kubeapi.patch(
            PLURAL,
            "alpha",
            {"status": {"phase": "Running"}},
            namespace="default",
            subresource="status",
        )
        wait_for(lambda: any("Running" in line for line in lines), 10)
    finally:
        process.terminate()
        process.wait(10)
        reader.join(10)
    assert lines[0].split()[:4] == ["NAME", "YACHT", "PRIORITY", "PHASE"]


def test_kubectl_apply_patch_describe_and_delete(kubeapi, crd, namespace, kubectl, tmp_path):
    manifest = tmp_path / "yb.yaml"
    manifest.write_text(yaml.safe_dump(yacht_backfill("alpha", namespace, priority=5)))
    assert "created" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    body = yaml.safe_load(manifest.read_text())
    body["spec"]["priority"] = 9
    manifest.write_text(yaml.safe_dump(body))
    assert "configured" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    assert kubeapi.get(PLURAL, "alpha", namespace)["spec"]["priority"] == 9
    assert kubeapi.get(PLURAL, "alpha", namespace)["metadata"]["generation"] == 2

    kubectl(
        "patch", "yb", "alpha", "-n", namespace, "--type=merge", "-p", '{"spec": {"priority": 10}}'
    )
    kubectl(
        "patch",
        "yb",
        "alpha",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/tier", "value": "premium"}]',
    )
    kubectl(
        "patch",
        "yb",
        "alpha",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Queued"}}',
    )
    obj = kubeapi.get(PLURAL, "alpha", namespace)
    assert (obj["spec"]["priority"], obj["spec"]["tier"], obj["status"]["phase"]) == (
        10,
        "premium",
        "Queued",
    )
    refused = kubectl(
        "patch",
        "yb",
        "alpha",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"priority": 5000}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "should be less than or equal to 1000" in refused.stderr

    events = k.CoreV1Api(kubeapi.client())
    events.create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "alpha-"},
            "type": "Normal",
            "reason": "Admitted",
            "message": "queued at position 1",
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "YachtBackfill",
                "name": "alpha",
                "namespace": namespace,
                "uid": obj["metadata"]["uid"],
            },
        },
    )
    described = kubectl("describe", "yb", "alpha", "-n", namespace).stdout
    assert "Queued" in described
    assert "queued at position 1" in described

    kubectl("label", "yb", "alpha", "-n", namespace, "team=red")
    assert kubectl("get", "yb", "-n", namespace, "-l", "team=red", "-o", "name").stdout == (
        "yachtbackfill.f1cortex.io/alpha\n"
    )
    assert "deleted" in kubectl("delete", "-f", str(manifest)).stdout
    assert kubeapi.objects(PLURAL, namespace) == []


def test_kubectl_with_built_ins(kubeapi, namespace, kubectl):
    # kubectl's typed generators send protobuf: these four are decoded...
    kubectl("create", "namespace", "made-by-kubectl")
    kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=a=1")
    kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=key=v")
    kubectl("create", "serviceaccount", "worker", "-n", namespace)
    assert kubeapi.get("namespaces", "made-by-kubectl")["status"]["phase"] == "Active"
    assert kubeapi.get("configmaps", "settings", namespace)["data"] == {"a": "1"}
    assert kubeapi.get("secrets", "creds", namespace)["data"] == {"key": "dg=="}
    assert kubeapi.get("serviceaccounts", "worker", namespace) is not None
    # ...others get a clear 415; rendered to YAML and applied, they go as JSON.
    generator = ["job", "once", "--image=busybox:1.36", "--", "true"]
    refused = kubectl("create", "-n", namespace, *generator, check=False)
    assert refused.returncode != 0 and "apply a YAML manifest instead" in refused.stderr
    rendered = kubectl(
        "create", "-n", namespace, "--dry-run=client", "-o", "yaml", *generator
    ).stdout
    kubectl("apply", "--validate=false", "-f", "-", input=rendered)
    out = kubectl("get", "jobs", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert out[1].split()[:3] == ["once", "Pending", "0/1"]
    kubectl("patch", "configmap", "settings", "-n", namespace, "-p", '{"data": {"b": "2"}}')
    assert kubeapi.get("configmaps", "settings", namespace)["data"] == {"a": "1", "b": "2"}
    kubectl(
        "wait", "--for=jsonpath={.data.b}=2", "configmap/settings", "-n", namespace, "--timeout=5s"
    )
    kubectl("delete", "namespace", namespace, "--timeout=10s")
    assert kubeapi.get("namespaces", namespace) is None


def test_standalone_server_process(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("f1sandbox")),
            "kubeapi",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced["kubeconfig"] == str(kubeconfig)
        wait_for(lambda: is_serving(announced["url"]), 10)
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == announced["url"]
        result = subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                f"--cache-dir={tmp_path}/cache",
                "get",
                "namespaces",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "namespace/default" in result.stdout.split()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
