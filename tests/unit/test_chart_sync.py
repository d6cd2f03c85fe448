"""What is generated from a source stays identical to it (scripts/sync_chart.py):

- the chart's CRDs are crds/*.yaml under a "generated" header;
- the sandbox's package data (f1sandbox.data) is crds/*.yaml and manifests/samples/*.yaml
  under the same header;
- manifests/crds.yaml and manifests/f1backfill.yaml are the chart rendered now.

Fix a failure with `python scripts/sync_chart.py` (make manifests).
"""

from __future__ import annotations

import difflib

import pytest
import yaml

from scripts import sync_chart
from tests.support.helm import CHART, helm_binary, require_helm

require_helm()

FIX = "out of date: run `python scripts/sync_chart.py` (make manifests)"


def diff(path, expected: str) -> str:
    actual = path.read_text() if path.is_file() else ""
    return "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                        str(path), "expected", n=1))[:4000]


def test_the_chart_has_a_copy_of_every_crd_and_nothing_else():
    expected = sync_chart.chart_crds()
    assert sorted(p.name for p in expected) == ["kopf-peering.yaml", "yachtbackfill.yaml"]
    assert sorted((CHART / "crds").iterdir()) == sorted(expected)


@pytest.mark.parametrize("name", ["kopf-peering.yaml", "yachtbackfill.yaml"])
def test_chart_crds_are_the_repositorys_crds(name):
    path = CHART / "crds" / name
    expected = sync_chart.chart_crds()[path]
    assert path.read_text() == expected, f"{FIX}\n{diff(path, expected)}"
    source = sync_chart.CRDS / name
    assert list(yaml.safe_load_all(path.read_text())) == list(
        yaml.safe_load_all(source.read_text()))


SANDBOX_COPIES = sorted(sync_chart.sandbox_data())


def test_the_sandbox_has_a_copy_of_every_crd_and_sample_and_nothing_else():
    names = {(p.parent.name, p.name) for p in SANDBOX_COPIES}
    assert {("crds", "yachtbackfill.yaml"), ("crds", "kopf-peering.yaml"),
            ("samples", "yachtbackfill-full.yaml")} <= names
    assert len(names) == len(list(sync_chart.CRDS.glob("*.yaml"))) + len(
        list(sync_chart.SAMPLES.glob("*.yaml")))
    present = sorted(p for p in sync_chart.SANDBOX_DATA.rglob("*.yaml"))
    assert present == SANDBOX_COPIES


@pytest.mark.parametrize("path", SANDBOX_COPIES,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sandbox_copies_are_their_sources(path):
    expected = sync_chart.sandbox_data()[path]
    assert path.read_text() == expected, f"{FIX}\n{diff(path, expected)}"
    source = (sync_chart.CRDS if path.parent.name == "crds" else sync_chart.SAMPLES) / path.name
    assert list(yaml.safe_load_all(path.read_text())) == list(
        yaml.safe_load_all(source.read_text()))


def test_the_sandbox_reads_its_copies_as_package_data():
    from f1sandbox import data

    assert [f.name for f in data.yaml_files(data.CRDS)] == sorted(
        p.name for p in sync_chart.CRDS.glob("*.yaml"))
    assert {d["kind"] for d in data.documents(data.SAMPLES)} == {"YachtBackfill"}


@pytest.fixture(scope="module")
def manifests() -> dict:
    return sync_chart.manifests(str(helm_binary()))


@pytest.mark.parametrize("name", ["crds.yaml", "f1backfill.yaml"])
def test_manifests_are_the_chart_rendered_now(manifests, name):
    path = sync_chart.MANIFESTS / name
    assert path.read_text() == manifests[path], f"{FIX}\n{diff(path, manifests[path])}"


def test_manifests_hold_the_crds_apart_from_the_rest(manifests):
    crds = [d for d in yaml.safe_load_all(manifests[sync_chart.MANIFESTS / "crds.yaml"]) if d]
    assert {d["kind"] for d in crds} == {"CustomResourceDefinition"} and len(crds) == 3
    rest = [d for d in yaml.safe_load_all(manifests[sync_chart.MANIFESTS / "f1backfill.yaml"])
            if d]
    assert rest[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": sync_chart.NAMESPACE,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    kinds = {d["kind"] for d in rest}
    assert "CustomResourceDefinition" not in kinds
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "ClusterKopfPeering", "Job", "Service", "PodDisruptionBudget"} <= kinds
    assert {d["metadata"].get("namespace") for d in rest[1:]} <= {sync_chart.NAMESPACE, None}


def test_only_generated_files_in_manifests_besides_the_samples():
    top = {p.name for p in sync_chart.MANIFESTS.iterdir() if p.is_file()}
    assert top == {"crds.yaml", "f1backfill.yaml"}


def test_the_check_mode_agrees(capsys):
    assert sync_chart.main(["--check", "--helm", str(helm_binary())]) == 0
    assert capsys.readouterr().err == ""
