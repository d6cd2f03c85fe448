"""pytest fixtures for tests that talk to the emulator; import the ones a module uses.

    from tests.support.kubeapi_fixtures import kubeapi, kubeconfig, k8s, kubectl  # noqa: F401

Each test gets its own server (starting one takes milliseconds), so tests share nothing.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from f1sandbox.kubeapi import KubeAPI

GROUP = "f1cortex.io"
# kopf's peering CRDs as the product ships them (one source: crds/).
PEERING_CRDS = Path(__file__).resolve().parents[2] / "crds" / "kopf-peering.yaml"
VERSION = "v1alpha1"
PLURAL = "yachtbackfills"

# A YachtBackfill CRD for the emulator's own tests: the shape of the product's resource,
# small enough to read. The product's CRD lives in crds/ and is tested elsewhere.
TEST_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "yachtbackfill",
            "kind": "YachtBackfill",
            "shortNames": ["yb"],
            "listKind": "YachtBackfillList",
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Yacht", "type": "string", "jsonPath": ".spec.yachtName"},
                    {
                        "name": "Priority",
                        "type": "integer",
                        "jsonPath": ".status.effectivePriority",
                    },
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["yachtId"],
                                "properties": {
                                    "yachtId": {
                                        "type": "string",
                                        "format": "uuid",
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self == oldSelf",
                                                "message": "yachtId is immutable",
                                            }
                                        ],
                                    },
                                    "yachtName": {"type": "string"},
                                    "tier": {
                                        "type": "string",
                                        "default": "standard",
                                        "enum": ["enterprise", "premium", "standard"],
                                    },
                                    "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
                                    "suspend": {"type": "boolean", "default": False},
                                    "batchSize": {
                                        "type": "integer",
                                        "default": 100,
                                        "minimum": 1,
                                        "maximum": 2048,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd() -> dict[str, Any]:
    return copy.deepcopy(TEST_CRD)


test_crd.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def yacht_backfill(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body_spec = {"yachtId": str(uuid.uuid4()), "yachtName": name.title(), **spec}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "YachtBackfill",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body_spec,
    }


@pytest.fixture
def kubeapi() -> Iterator[KubeAPI]:
    with KubeAPI() as api:
        yield api


@pytest.fixture
def kubeconfig(kubeapi: KubeAPI, tmp_path: Path) -> Path:
    return kubeapi.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s(kubeconfig: Path) -> Iterator[Any]:
    """The official client, configured from the kubeconfig file as an application would."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def crd(kubeapi: KubeAPI) -> dict[str, Any]:
    return kubeapi.load_crd(test_crd())[0]


@pytest.fixture
def namespace(kubeapi: KubeAPI) -> str:
    name = f"test-{uuid.uuid4().hex[:8]}"
    kubeapi.create_namespace(name)
    return name


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """Run kubectl against the emulator; fails the test on a non-zero exit unless check=False.

    Each test has its own discovery cache: the emulator's port is reused by later
    servers with other CRDs, and a shared cache would show kubectl stale resources.
    """

    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        command = ["kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path}/kcache", *args]
        result = subprocess.run(
            command, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run
