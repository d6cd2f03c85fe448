"""Every pod template the chart renders meets the Kubernetes "restricted" Pod Security
Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/, the
baseline checks included), plus the chart's own rules: read-only root filesystem, resource
limits, uid 10001 (the image's user), and no service-account token except the operator's.

The exceptions are the in-chart Postgres and Redis: they run as their official images'
users (`postgres`, uid/gid 999; `redis`, uid 999, gid 1000) — still non-root, so still
restricted (see templates/postgresql.yaml and templates/redis.yaml).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from f1backfill.admission import ObservedBackfill
from f1backfill.api import BackfillSpec
from f1backfill.builders.job import build_job
from f1backfill.config import OperatorSettings
from tests.support.helm import SCENARIOS, render_scenario, require_helm

require_helm()

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t",
                 "container_engine_t"}
APP_UID = 10001
# (uid, gid) of the components that run an official image as that image's own user.
IMAGE_USERS = {"database": (999, 999),  # pgvector/pgvector's postgres
               "cache": (999, 1000)}  # redis's redis


def pod_templates(obj: dict) -> list[tuple[dict, dict]]:
    """(pod template metadata, pod spec) of a workload."""
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = spec["template"]
    elif obj["kind"] == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
    elif obj["kind"] == "Pod":
        template = obj
    else:
        return []
    return [(template.get("metadata") or {}, template["spec"])]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"],
            *pod.get("ephemeralContainers", [])]


def restricted_violations(metadata: dict, pod: dict) -> list[str]:
    """What the restricted profile (latest) refuses in a pod, as the admission plugin says."""
    problems = []
    pod_sc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag}=true")
    if pod_sc.get("sysctls"):
        problems += [f"sysctl {s['name']}" for s in pod_sc["sysctls"]
                     if s["name"] not in SAFE_SYSCTLS]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} of type {kinds}")
    annotations = metadata.get("annotations") or {}
    problems += [f"appArmor {k}" for k, v in annotations.items()
                 if k.startswith("container.apparmor.security.beta.kubernetes.io/")
                 and v == "unconfined"]
    pod_non_root = pod_sc.get("runAsNonRoot")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    if pod_seccomp == "Unconfined":
        problems.append("pod seccomp Unconfined")
    for context in (pod_sc,):
        se = context.get("seLinuxOptions") or {}
        if se.get("type") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            problems.append("pod seLinuxOptions")
    for container in containers(pod):
        name = container["name"]
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation != false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{name}: appArmor Unconfined")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"{name}: procMount {sc['procMount']}")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            problems.append(f"{name}: seLinuxOptions")
        problems += [f"{name}: hostPort {p['hostPort']}" for p in container.get("ports", [])
                     if p.get("hostPort")]
    return problems


def chart_pods() -> list[tuple[str, dict, dict, dict]]:
    """(scenario, workload, pod metadata, pod spec) of every pod template in every scenario."""
    out = []
    for name in sorted(SCENARIOS):
        for obj in render_scenario(name):
            for metadata, pod in pod_templates(obj):
                out.append((name, obj, metadata, pod))
    return out


PODS = chart_pods()


def pod_id(entry: tuple) -> str:
    name, obj, _, _ = entry
    return f"{name}:{obj['kind']}/{obj['metadata']['name']}"


def test_every_kind_of_pod_template_is_checked():
    kinds = {(obj["kind"], obj["metadata"]["labels"]["app.kubernetes.io/component"])
             for _, obj, _, _ in PODS}
    assert kinds == {("Deployment", "operator"), ("StatefulSet", "database"),
                     ("Deployment", "cache"), ("Deployment", "search"),
                     ("Job", "migrations"), ("Job", "demo-seed"), ("CronJob", "feedback")}


@pytest.mark.parametrize("entry", PODS, ids=pod_id)
def test_pod_templates_meet_the_restricted_profile(entry):
    _, _, metadata, pod = entry
    assert restricted_violations(metadata, pod) == []


@pytest.mark.parametrize("entry", PODS, ids=pod_id)
def test_pod_templates_meet_the_charts_own_rules(entry):
    _, obj, _, pod = entry
    component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    uid, gid = IMAGE_USERS.get(component, (APP_UID, APP_UID))
    sc = pod["securityContext"]
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (
        True, uid, gid, gid)
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(pod):
        csc = container["securityContext"]
        assert csc["readOnlyRootFilesystem"] is True, container["name"]
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["memory"], container["name"]
        assert container["resources"]["limits"]["cpu"], container["name"]
    # Only the operator talks to the Kubernetes API.
    assert pod["automountServiceAccountToken"] is (component == "operator")


def test_the_restricted_check_catches_what_it_must():
    """The checker itself: each breach of the profile is reported."""
    good = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}
    assert restricted_violations({}, good) == []
    breaches: list[tuple[str, Any]] = [
        ("hostNetwork", lambda p: p.update(hostNetwork=True)),
        ("hostPath", lambda p: p.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}])),
        ("runAsNonRoot", lambda p: p["securityContext"].pop("runAsNonRoot")),
        ("seccomp", lambda p: p["securityContext"].pop("seccompProfile")),
        ("escalation", lambda p: p["containers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation")),
        ("drop ALL", lambda p: p["containers"][0]["securityContext"].pop("capabilities")),
        ("privileged", lambda p: p["containers"][0]["securityContext"].update(privileged=True)),
        ("root", lambda p: p["containers"][0]["securityContext"].update(runAsUser=0)),
        ("hostPort", lambda p: p["containers"][0].update(ports=[{"containerPort": 1,
                                                                "hostPort": 1}])),
    ]
    for label, breach in breaches:
        pod = copy.deepcopy(good)
        breach(pod)
        assert restricted_violations({}, pod), label


def test_worker_jobs_the_operator_creates_are_restricted_and_get_no_token():
    """Not a chart template, but the pods the chart's operator starts in users' namespaces."""
    spec = BackfillSpec.from_dict({"yachtId": "28191ed2-7cc7-43b2-a48a-c13674cfbc1c"})
    backfill = ObservedBackfill(namespace="fleet", name="b", uid="u", generation=1,
                                created=datetime(2025, 1, 1, tzinfo=UTC), spec=spec)
    job = build_job(backfill, 1, OperatorSettings())
    (metadata, pod), = pod_templates(job)
    assert restricted_violations(metadata, pod) == []
    assert pod["automountServiceAccountToken"] is False
