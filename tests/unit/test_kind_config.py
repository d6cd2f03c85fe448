"""The local cluster: kind-config.yaml and the Makefile's image / kind-up / kind-down targets.

Docker and kind are not needed: the config is parsed, and `make -n` prints the recipes
without running them. What a real run does is documented in docs/RUNBOOK.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from f1backfill.defaults import DEFAULT_MEMORY

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
NODE_IMAGE = re.compile(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}")

CLUSTER = "f1backfill"
IMAGE = "f1backfill:dev"
DEMO_IMAGE = "f1backfill-demo:dev"
NAMESPACE = "f1backfill-system"
CONTEXT = f"kind-{CLUSTER}"


def make_dry_run(*args: str) -> str:
    """`make -n ...` with the Makefile's defaults (no tool variables from the environment)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in {"DOCKER", "KIND", "KUBECTL", "HELM", "IMAGE_REPOSITORY", "IMAGE_TAG",
                        "DEMO_IMAGE_REPOSITORY", "KIND_CLUSTER", "RELEASE", "RELEASE_NAMESPACE",
                        "HELM_TIMEOUT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    result = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    # One command per line: join the recipes' backslash continuations.
    return re.sub(r"\\\n\s*", " ", result.stdout)


def lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if line.strip()]


def index_of(commands: list[str], needle: str) -> int:
    for n, command in enumerate(commands):
        if needle in command:
            return n
    raise AssertionError(f"{needle!r} not in:\n" + "\n".join(commands))


# --- kind-config.yaml ------------------------------------------------------------------------


def test_config_is_a_kind_cluster() -> None:
    assert CONFIG["kind"] == "Cluster"
    assert CONFIG["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert CONFIG["name"] == CLUSTER


def test_one_control_plane_and_a_worker() -> None:
    roles = [node["role"] for node in CONFIG["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles.count("worker") >= 1
    assert set(roles) == {"control-plane", "worker"}


def test_node_images_are_pinned_by_digest_and_identical() -> None:
    images = {node.get("image") for node in CONFIG["nodes"]}
    assert len(images) == 1, images
    (image,) = images
    assert image and NODE_IMAGE.fullmatch(image), image


def test_nothing_constrains_the_workers_memory_below_a_job() -> None:
    """The Jobs request 512Mi: no kubelet reservation or eviction patch may eat into that, and
    the file says how much memory Docker needs."""
    for node in CONFIG["nodes"]:
        assert "kubeadmConfigPatches" not in node
        assert "kubeadmConfigPatchesJSON6902" not in node
    text = (ROOT / "kind-config.yaml").read_text()
    assert DEFAULT_MEMORY in text and "GiB" in text


# --- the Makefile's targets -----------------------------------------------------------------------


def test_image_target_builds_the_dev_image() -> None:
    assert lines(make_dry_run("image")) == [f"docker build -t {IMAGE} ."]


def test_demo_image_target_builds_the_dockerfiles_demo_target() -> None:
    assert lines(make_dry_run("demo-image")) == [f"docker build --target demo -t {DEMO_IMAGE} ."]


def test_tool_variables_can_be_overridden() -> None:
    out = lines(make_dry_run("image", "DOCKER=podman", "IMAGE_TAG=test"))
    assert out == ["podman build -t f1backfill:test ."]
    out = lines(make_dry_run("kind-down", "KIND=/opt/kind"))
    assert out == [f"/opt/kind delete cluster --name {CLUSTER}"]


def test_kind_up_prints_the_expected_commands_in_order() -> None:
    commands = lines(make_dry_run("kind-up"))
    build = index_of(commands, f"docker build -t {IMAGE} .")
    build_demo = index_of(commands, f"docker build --target demo -t {DEMO_IMAGE} .")
    create = index_of(commands,
                      f"kind create cluster --name {CLUSTER} --config kind-config.yaml")
    load = index_of(commands, f"kind load docker-image {IMAGE} {DEMO_IMAGE} --name {CLUSTER}")
    namespace = index_of(commands, f"create namespace {NAMESPACE}")
    jwt = index_of(commands, "create secret generic f1backfill-jwt")
    helm = index_of(commands, "helm upgrade --install f1backfill charts/f1backfill")
    apply = index_of(commands,
                     f"kubectl --context {CONTEXT} apply -n {NAMESPACE} -f manifests/samples/")
    hint = index_of(commands, f"get yb -n {NAMESPACE} -w")
    assert max(build, build_demo, create) < load < namespace < jwt < helm < apply < hint

    # The search front door's token secret exists before its pods start, and a later run
    # keeps it (tokens minted before stay valid).
    assert f"--context {CONTEXT} -n {NAMESPACE} get secret f1backfill-jwt" in commands[jwt]
    assert "|| " in commands[jwt] and "--from-literal=JWT_SECRET=" in commands[jwt]

    # The cluster is created only when it is absent.
    assert f"grep -qx '{CLUSTER}'" in commands[create]
    assert "kind get clusters" in commands[create]

    install = commands[helm]
    for flag in (f"--kube-context {CONTEXT}", f"--namespace {NAMESPACE}", "--create-namespace",
                 "--set image.repository=f1backfill", "--set image.tag=dev",
                 "--set postgresql.enabled=true", "--set redis.enabled=true",
                 "--set demo.seed=true",
                 "--set demo.image.repository=f1backfill-demo", "--set demo.image.tag=dev",
                 "--wait"):
        assert flag in install, (flag, install)


def test_kind_down_deletes_the_cluster() -> None:
    assert lines(make_dry_run("kind-down")) == [f"kind delete cluster --name {CLUSTER}"]


def test_what_kind_up_applies_exists() -> None:
    samples = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
    assert samples, "manifests/samples/ is empty"
    for path in samples:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "YachtBackfill"
            assert "namespace" not in doc["metadata"], (
                f"{path.name}: kind-up applies the samples into {NAMESPACE} with -n")


def test_helm_values_kind_up_sets_exist_in_the_chart() -> None:
    """The --set keys are the chart's contract; checked once the chart is there."""
    values_path = ROOT / "charts" / "f1backfill" / "values.yaml"
    if not values_path.exists():
        pytest.skip("charts/f1backfill/values.yaml is not there yet")
    values = yaml.safe_load(values_path.read_text())
    for dotted in ("image.repository", "image.tag", "postgresql.enabled", "redis.enabled",
                   "demo.seed", "demo.image.repository", "demo.image.tag",
                   "search.jwt.existingSecret"):
        node = values
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"values.yaml lacks {dotted}"
            node = node[key]


def test_the_charts_kind_scenario_is_what_kind_up_installs() -> None:
    """tests/support/helm.py renders the "kind" scenario for every chart check: it must be
    the switches kind-up turns on (images aside), and kind-up's JWT Secret the one the
    chart reads."""
    from tests.support.helm import SCENARIOS

    commands = lines(make_dry_run("kind-up"))
    install = commands[index_of(commands, "helm upgrade --install")]
    switches = dict(re.findall(r"--set ([\w.]+)=(true|false)", install))
    scenario, _ = SCENARIOS["kind"]
    assert switches == {
        f"{top}.{key}": str(value).lower() for top, sub in scenario.items()
        for key, value in sub.items()}
    values = yaml.safe_load((ROOT / "charts" / "f1backfill" / "values.yaml").read_text())
    assert values["search"]["jwt"]["existingSecret"] == "f1backfill-jwt"
