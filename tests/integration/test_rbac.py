"""The chart's RBAC is exactly what the operator uses: no call refused, no grant unused.

The real operator process runs against the API emulator (tests/support/stack.py) with a
kubeconfig carrying a token of its own; the job runner and the test talk to the emulator
with other tokens (or in-process). The operator goes through admission, a Job's
completion, a suspend (the running Job is deleted), Events, kopf peering (with the
peering object the chart renders) and drift, then stops gracefully (kopf withdraws from
peering). Every request its token made is mapped to an RBAC (apiGroup, resource, verb,
namespace, name) and checked against the Roles/ClusterRoles the chart renders for the
same settings:

- every call must be allowed by a rule bound to the operator's ServiceAccount;
- every (resource, verb) a rule grants must have been used, or be listed in ALLOWANCES
  with the reason the test cannot reach it.

Three settings: cluster-wide with peering (the default), named namespaces with peering
(Roles + KopfPeering), and standalone (no peering rules at all).
"""

from __future__ import annotations

import signal
import urllib.parse
from dataclasses import dataclass

import psycopg2
import pytest

from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.helm import NAMESPACE, render, require_helm
from tests.support.stack import backfill, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

require_helm()

OPERATOR_TOKEN = "f1backfill-operator-token"  # the emulator checks no token
SERVICE_ACCOUNT = ("ServiceAccount", NAMESPACE, "f1backfill")

# Granted but not reached by this test, each with the reason. Keys: (apiGroup, resource,
# verb). Empty today: every grant is exercised.
ALLOWANCES: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Call:
    """One API request as RBAC sees it."""

    group: str
    resource: str  # plural, or plural/subresource
    verb: str
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster)"
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{named}{where}"


def to_call(method: str, path_qs: str) -> Call | None:
    """The RBAC view of a request; None for discovery and other non-resource URLs (granted
    to every authenticated user by the default system:discovery ClusterRole)."""
    url = urllib.parse.urlsplit(path_qs)
    query = urllib.parse.parse_qs(url.query)
    parts = [p for p in url.path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    core_namespace_subresource = group == "" and len(rest) == 3 and rest[2] in (
        "status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not core_namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    name = rest[1] if len(rest) > 1 else None
    watch = query.get("watch", ["false"])[0].lower() in ("true", "1")
    verb = {
        "GET": "get" if name else ("watch" if watch else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    return Call(group, resource, verb, namespace, name)


# --- the chart's RBAC ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One (group, resource, verb) of a rule, where it applies (None: every namespace and
    cluster-scoped objects) and which names (empty: all)."""

    group: str
    resource: str
    verb: str
    namespace: str | None
    names: frozenset[str]

    def allows(self, call: Call) -> bool:
        return (self.group in (call.group, "*") and self.resource in (call.resource, "*")
                and self.verb in (call.verb, "*")
                and (self.namespace is None or self.namespace == call.namespace)
                and (not self.names or call.name in self.names))

    def __str__(self) -> str:
        names = f" {sorted(self.names)}" if self.names else ""
        where = f" in {self.namespace}" if self.namespace else " (ClusterRole)"
        return f"{self.verb} {self.group or 'core'}/{self.resource}{names}{where}"


def bound_to_operator(binding: dict) -> bool:
    return any((s["kind"], s.get("namespace"), s["name"]) == SERVICE_ACCOUNT
               for s in binding["subjects"])


def grants(objects: list[dict]) -> list[Grant]:
    """Every grant the chart gives the operator's ServiceAccount."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert bound_to_operator(binding), binding["metadata"]["name"]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.append(Grant(group, resource, verb, namespace,
                                         frozenset(rule.get("resourceNames", ()))))
    return out


def check(calls: list[Call], objects: list[dict]) -> None:
    granted = grants(objects)
    refused = sorted({str(c) for c in calls if not any(g.allows(c) for g in granted)})
    assert not refused, "the operator made calls its role does not allow:\n" + "\n".join(refused)
    unused = sorted({str(g) for g in granted
                     if not any(g.allows(c) for c in calls)
                     and (g.group, g.resource, g.verb) not in ALLOWANCES})
    assert not unused, "the role grants what the operator never used:\n" + "\n".join(unused)


# --- running the operator --------------------------------------------------------------------


def chart_env(objects: list[dict]) -> dict[str, str]:
    """The settings that shape the operator's API calls, as the chart's Deployment sets them."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"
                     and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return {key: env[key] for key in ("WATCH_NAMESPACES", "PEERING_NAME", "STANDALONE")}


def record_fleet(pg_server, redis_url, tmp_path, objects: list[dict], *, drift: bool
                 ) -> list[Call]:
    """Run the operator through a small fleet's life; the calls its token made. With the
    search cache's Redis: its Jobs reference the Redis Secret, which the kubelet (here the
    job runner, with its own token) reads, never the operator."""
    with running_stack(pg_server, tmp_path, redis_url=redis_url) as stack:
        for peering in (o for o in objects if o["kind"] in ("ClusterKopfPeering",
                                                            "KopfPeering")):
            stack.api.apply(peering)
        kubeconfig = stack.api.write_kubeconfig(tmp_path / "operator-kubeconfig",
                                                token=OPERATOR_TOKEN)
        conn = psycopg2.connect(stack.database_url)
        conn.autocommit = True
        try:
            exercise(stack, conn, kubeconfig, chart_env(objects), drift=drift)
        finally:
            conn.close()
        requests = stack.api.requests(OPERATOR_TOKEN)
    calls = [to_call(method, path) for _, method, path in requests]
    assert requests and calls
    return [c for c in calls if c is not None]


def exercise(stack, conn, kubeconfig, env: dict[str, str], *, drift: bool) -> None:
    quick = add_yacht(conn, "Quick", "enterprise")
    keys = add_rows(conn, quick.id, 8, object_types=("work_order",))
    slow = add_yacht(conn, "Slow", "standard")
    add_rows(conn, slow.id, 200, max_chars=300)
    stack.apply(backfill("quick", quick.id, tier="enterprise", batchSleepSeconds=0,
                         drift={"toleranceMinutes": 10, "autoRequeue": True}))
    # Small batches against a provider with latency: still running when it is suspended.
    stack.apply(backfill("slow", slow.id, batchSize=5, batchSleepSeconds=0))
    stack.fake.latency = 0.2
    stack.start_runner()
    stack.api.record_requests()
    stack.start_operator(KUBECONFIG=str(kubeconfig), **env)

    def state() -> str:
        return f"{stack.phases()}\n{stack.operator_output()[-3000:]}"

    # Admission in priority order, a Job completing, status and Events.
    wait_for(lambda: stack.phases().get("quick") == "Succeeded", timeout=60, message=state)
    # Suspending the running backfill deletes its Job.
    wait_for(lambda: stack.phases().get("slow") == "Running", timeout=60, message=state)
    stack.api.patch("yachtbackfills", "slow", {"spec": {"suspend": True}}, namespace="fleet")
    wait_for(lambda: stack.phases().get("slow") == "Suspended", timeout=30, message=state)
    wait_for(lambda: stack.unfinished_jobs() == [], timeout=30, message=state)
    if drift:
        # A work order changed after its row was embedded: Drift, re-queued, re-admitted.
        stack.fake.latency = 0.0
        _, stale_id = keys[0]
        with conn.cursor() as cur:
            cur.execute("UPDATE search_index SET updated_at = now() - interval '1 hour' "
                        "WHERE object_id = %s", (stale_id,))
            cur.execute("INSERT INTO pms_work_orders (id, yacht_id, title, updated_at) "
                        "VALUES (%s, %s, 'changed', now())", (stale_id, quick.id))
        wait_for(lambda: any(e["reason"] == "DriftRequeued" for e in stack.events("quick")),
                 timeout=30, message=state)
        wait_for(lambda: stack.phases().get("quick") == "Succeeded"
                 and stack.status("quick").get("admissions") == 2, timeout=60, message=state)
    assert status_counts(conn, quick.id) == {"embedded": 8}
    # An Event follows the status write that made it: wait for it, do not race it.
    wait_for(lambda: {"Admitted", "Completed", "Suspended"} <= {
        e["reason"] for e in stack.events()}, timeout=10,
        message=lambda: f"{sorted({e['reason'] for e in stack.events()})}")
    # A graceful stop: kopf withdraws this replica from the peering object.
    stack.stop_operator(signal.SIGTERM)


# --- the tests -------------------------------------------------------------------------------


def test_cluster_wide_with_peering(pg_server, redis_url, tmp_path):
    objects = render()
    assert {o["kind"] for o in objects} >= {"ClusterRole", "ClusterKopfPeering"}
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    calls = record_fleet(pg_server, redis_url, tmp_path, objects, drift=True)
    assert {(c.resource, c.verb) for c in calls} >= {
        ("clusterkopfpeerings", "patch"), ("jobs", "delete"), ("yachtbackfills/status", "patch")}
    check(calls, objects)


def test_named_namespaces_with_peering(pg_server, redis_url, tmp_path):
    objects = render({"watchNamespaces": ["fleet"]})
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"] == ["fleet"]
    calls = record_fleet(pg_server, redis_url, tmp_path, objects, drift=False)
    assert {c.namespace for c in calls if c.resource in ("yachtbackfills", "jobs")} == {"fleet"}
    check(calls, objects)


def test_standalone_needs_no_peering_rights(pg_server, redis_url, tmp_path):
    objects = render({"operator": {"peering": {"standalone": True}}})
    rules = [r for o in objects if o["kind"] == "ClusterRole" for r in o["rules"]]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]
    calls = record_fleet(pg_server, redis_url, tmp_path, objects, drift=False)
    check(calls, objects)


# --- the pieces, on their own ------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/apis/f1cortex.io/v1alpha1/yachtbackfills?watch=true&allowWatchBookmarks=true",
     Call("f1cortex.io", "yachtbackfills", "watch", None, None)),
    ("GET", "/apis/batch/v1/namespaces/fleet/jobs?labelSelector=a%3Db",
     Call("batch", "jobs", "list", "fleet", None)),
    ("PATCH", "/apis/f1cortex.io/v1alpha1/namespaces/fleet/yachtbackfills/a/status",
     Call("f1cortex.io", "yachtbackfills/status", "patch", "fleet", "a")),
    ("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/f1backfill",
     Call("kopf.dev", "clusterkopfpeerings", "get", None, "f1backfill")),
    ("POST", "/api/v1/namespaces/fleet/events", Call("", "events", "create", "fleet", None)),
    ("DELETE", "/apis/batch/v1/namespaces/fleet/jobs/j", Call("batch", "jobs", "delete",
                                                            "fleet", "j")),
    ("DELETE", "/apis/batch/v1/namespaces/fleet/jobs", Call("batch", "jobs",
                                                          "deletecollection", "fleet", None)),
    ("GET", "/api/v1/namespaces", Call("", "namespaces", "list", None, None)),
    ("GET", "/api/v1/namespaces/fleet", Call("", "namespaces", "get", None, "fleet")),
    ("PUT", "/api/v1/namespaces/fleet/finalize", Call("", "namespaces/finalize", "update",
                                                      None, "fleet")),
    ("GET", "/apis/batch/v1", None),
    ("GET", "/apis", None),
    ("GET", "/version", None),
])
def test_requests_map_to_rbac_verbs(method, path, expected):
    assert to_call(method, path) == expected


def test_the_check_refuses_a_missing_rule_and_an_unused_one():
    objects = render()
    calls = [Call("batch", "jobs", "create", "fleet", None)]
    with pytest.raises(AssertionError, match="never used"):
        check(calls, objects)
    wider = [*calls, Call("", "secrets", "get", "fleet", "x")]
    with pytest.raises(AssertionError, match="does not allow"):
        check(wider, objects)
    peering = Grant("kopf.dev", "clusterkopfpeerings", "patch", None, frozenset({"f1backfill"}))
    assert peering.allows(Call("kopf.dev", "clusterkopfpeerings", "patch", None, "f1backfill"))
    assert not peering.allows(Call("kopf.dev", "clusterkopfpeerings", "patch", None, "other"))


def test_the_emulator_logs_requests_per_token(tmp_path):
    from kubernetes import client, config

    from f1sandbox.kubeapi import KubeAPI

    with KubeAPI() as api:
        client.CoreV1Api(api.client()).list_namespace()
        assert api.requests() == []  # nothing is kept before record_requests
        api.record_requests()
        for token in ("alice", "bob"):
            path = api.write_kubeconfig(tmp_path / token, token=token)
            core = client.CoreV1Api(config.new_client_from_config(str(path)))
            core.list_namespace()
            if token == "bob":
                core.read_namespace("default")
        assert [(m, p) for _, m, p in api.requests("alice")] == [("GET", "/api/v1/namespaces")]
        assert [(m, p) for _, m, p in api.requests("bob")] == [
            ("GET", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/default")]
        assert {t for t, _, _ in api.requests()} == {"alice", "bob"}
