"""The kopf peering CRDs: what kopf 1.45 looks for and writes."""

from __future__ import annotations

import pytest

from f1sandbox.crd import load_yaml_documents, structural_violations, unknown_fields
from tests.support.crd_cases import PEERING_CRD_PATH

DOCUMENTS = load_yaml_documents(PEERING_CRD_PATH)
BY_KIND = {doc["spec"]["names"]["kind"]: doc for doc in DOCUMENTS}


def test_the_file_holds_exactly_the_two_peering_crds() -> None:
    assert [doc["kind"] for doc in DOCUMENTS] == ["CustomResourceDefinition"] * 2
    assert set(BY_KIND) == {"ClusterKopfPeering", "KopfPeering"}


@pytest.mark.parametrize(
    ("kind", "plural", "scope"),
    [
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    ],
)
def test_names_and_scope(kind: str, plural: str, scope: str) -> None:
    crd = BY_KIND[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.kopf.dev"
    assert crd["spec"]["group"] == "kopf.dev"
    assert crd["spec"]["scope"] == scope
    assert crd["spec"]["names"]["plural"] == plural
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)


def test_kopf_looks_for_these_peering_resources() -> None:
    references = pytest.importorskip("kopf._cogs.structs.references")
    for selector, kind in [
        (references.CLUSTER_PEERINGS_K, "ClusterKopfPeering"),
        (references.NAMESPACED_PEERINGS_K, "KopfPeering"),
    ]:
        crd = BY_KIND[kind]["spec"]
        resource = references.Resource(
            group=crd["group"],
            version=crd["versions"][0]["name"],
            plural=crd["names"]["plural"],
            kind=crd["names"]["kind"],
            singular=crd["names"]["singular"],
            namespaced=crd["scope"] == "Namespaced",
        )
        assert selector.check(resource), (selector, kind)


@pytest.mark.parametrize("kind", ["ClusterKopfPeering", "KopfPeering"])
def test_peer_keepalives_in_status_are_not_pruned(kind: str) -> None:
    schema = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_violations(schema) == []
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": kind,
        "metadata": {"name": "f1backfill"},
        # What kopf's peering.touch() patches in: {<peer id>: Peer.as_dict()}.
        "status": {
            "operator-7d9f@f1backfill-0": {
                "priority": 0,
                "lifetime": 60,
                "lastseen": "2025-01-31T12:00:00+00:00",
            }
        },
    }
    assert unknown_fields(schema, peering) == []
