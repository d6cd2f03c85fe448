"""The chart rendered by the real helm with every switch, and what each object must be.

Every rendered object is validated with kubernetes-validate in strict mode (unknown fields
refused) against Kubernetes 1.32 (what the API emulator reports) and the newest version
the package carries offline. It has no schemas for custom resources: the kopf peering
objects are checked against the chart's own peering CRDs, and the Prometheus Operator's
ServiceMonitor / PodMonitor / PrometheusRule structurally (the fields the operator reads,
selectors that match what they must scrape, PromQL naming only exported metrics).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
import yaml

from f1backfill.admission import ObservedBackfill
from f1backfill.api import BackfillSpec
from f1backfill.builders.job import WORKER_PORT, build_job, job_labels
from f1backfill.config import OperatorSettings
from f1backfill.controller.metrics import OperatorMetrics
from f1backfill.worker.metrics import WorkerMetrics
from tests.support.helm import (
    CHART,
    MONITORING,
    NAMESPACE,
    SCENARIOS,
    by_kind,
    container_env,
    helm_binary,
    helm_env,
    lint,
    one,
    render,
    render_scenario,
    require_helm,
    template,
    values_args,
)

require_helm()

KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.utils.latest_version())
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "PodMonitor",
                "PrometheusRule"}
# Settings the chart leaves to the operator's default on purpose (operator.extraEnv can
# still set them): the image's own entry point, not a user's choice.
# CLOUDFLARE_API_BASE_URL: Cloudflare's API, another only in tests (a local fake of it).
NOT_EXPOSED = {"WORKER_COMMAND", "CLOUDFLARE_API_BASE_URL"}
# The operator's Deployment is called the release's full name; the other Deployments
# (the in-chart Redis, the search front door) add a suffix.
OPERATOR = "f1backfill"


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_scenario(request.param)


def operator_env(objects: list[dict]) -> dict[str, Any]:
    return container_env(one(objects, "Deployment", OPERATOR))


def exported_metrics() -> set[str]:
    """Every series name the worker and the operator export (with _total, _bucket...)."""
    names: set[str] = set()
    for metrics in (WorkerMetrics(), OperatorMetrics()):
        for family in metrics.registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    # Labelled families without a sample yet are still collected by name; counters'
    # families drop the suffix, so add it.
    names.update(f"{name}_total" for name in list(names))
    return names


PROMQL_WORDS = {"max", "min", "sum", "count", "avg", "by", "without", "rate", "increase",
                "histogram_quantile", "le", "and", "or", "unless", "on", "ignoring"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside {...} and (...) label lists
    that are not functions, keywords or durations."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    return {word for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges)
            if word not in PROMQL_WORDS}


# --- helm lint / helm template ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint_passes_in_strict_mode(name):
    values, _ = SCENARIOS[name]
    result = lint(values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rendered_object_is_valid_for_kubernetes_in_strict_mode(scenario):
    name, objects = scenario
    assert objects, name
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']} is invalid for "
                            f"Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_the_validator_is_strict():
    deployment = one(render(), "Deployment", OPERATOR)
    deployment["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="bogus"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_chart_crds_are_valid_for_kubernetes():
    crds = by_kind(render(include_crds=True), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev", "yachtbackfills.f1cortex.io"]
    for crd in crds:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(crd, version, strict=True)


def test_names_are_unique_per_kind_and_namespace(scenario):
    name, objects = scenario
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), name


def test_namespaced_objects_name_their_namespace(scenario):
    _, objects = scenario
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for obj in objects:
        has_namespace = "namespace" in obj["metadata"]
        assert has_namespace != (obj["kind"] in cluster_scoped), obj["kind"]


# --- the operator Deployment -----------------------------------------------------------------


def test_the_operator_gets_every_setting_a_user_would_set():
    env = operator_env(render())
    settings_env = {f.metadata["env"] for f in fields(OperatorSettings)}
    assert settings_env - NOT_EXPOSED <= set(env), settings_env - NOT_EXPOSED - set(env)
    assert set(env) - settings_env == {"POD_NAME"}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "f1backfill-database",
                                                    "key": "DATABASE_URL"}}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_operator_accepts_the_environment_the_chart_gives_it(name):
    env = operator_env(render_scenario(name))
    plain = {key: value for key, value in env.items() if isinstance(value, str)}
    settings = OperatorSettings.from_env({**plain, "DATABASE_URL": "postgresql://x/y"})
    values, _ = SCENARIOS[name]
    assert settings.namespaces == tuple(values.get("watchNamespaces", ()))
    assert settings.default_provider == values.get("embedding", {}).get("defaultProvider",
                                                                         "hash")
    assert settings.health_port == 8080 and settings.metrics_port == 9090


def test_defaults_match_the_operators_own():
    env = operator_env(render())
    plain = {key: value for key, value in env.items() if isinstance(value, str) and value}
    from_chart = OperatorSettings.from_env({**plain, "DATABASE_URL": "postgresql://x/y"})
    defaults = OperatorSettings(database_url="postgresql://x/y")
    differing = {f.name for f in fields(OperatorSettings)
                 if getattr(from_chart, f.name) != getattr(defaults, f.name)}
    # The chart names its own image, and the Redis Secret the workers share with the search
    # front door (on by default, it needs one); everything else is the operator's default.
    assert differing == {"worker_image", "redis_secret_name"}
    assert from_chart.worker_image == "f1backfill:0.1.0"
    assert from_chart.redis_secret_name == "f1backfill-redis"


def test_workers_run_the_operators_image():
    deployment = one(render({"image": {"repository": "registry.example/f1", "tag": "1.2.3"}}),
                     "Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/f1:1.2.3"
    assert container["command"] == ["f1backfill", "operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKER_IMAGE"] == container["image"]
    assert env["WORKER_IMAGE_PULL_POLICY"] == container["imagePullPolicy"] == "IfNotPresent"


def test_probes_hit_kopfs_liveness_endpoint():
    deployment = one(render(), "Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize(("values", "strategy"), [
    ({}, "RollingUpdate"),
    ({"replicaCount": 2}, "RollingUpdate"),
    ({"operator": {"peering": {"standalone": True}}}, "Recreate"),
])
def test_rollout_strategy_never_overlaps_two_operators_without_peering(values, strategy):
    deployment = one(render(values), "Deployment", OPERATOR)
    assert deployment["spec"]["strategy"]["type"] == strategy
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 1)


def test_openai_provider_reads_the_key_secret_and_base_url():
    values, _ = SCENARIOS["openai"]
    env = operator_env(render(values))
    assert env["DEFAULT_EMBEDDING_PROVIDER"] == "openai"
    assert env["WORKER_OPENAI_SECRET"] == "openai-key"
    assert env["WORKER_OPENAI_SECRET_KEY"] == "OPENAI_API_KEY"
    assert env["OPENAI_BASE_URL"] == "https://llm.example.com/v1"
    assert "OPENAI_API_KEY" not in env  # the operator never holds the key; workers do


def test_no_redis_for_the_operator_alone():
    env = operator_env(render_scenario("no-search"))
    assert (env["REDIS_URL"], env["WORKER_REDIS_SECRET"], env["WORKER_REDIS_SECRET_KEY"]) == (
        "", "", "REDIS_URL")


def job_env(env: dict[str, Any]) -> dict[str, dict]:
    """The env of a Job the operator creates with the settings the chart gives it."""
    plain = {key: value for key, value in env.items() if isinstance(value, str)}
    settings = OperatorSettings.from_env({**plain, "DATABASE_URL": "postgresql://x/y",
                                          "REDIS_URL": "redis://:pw@cache:6379/0"})
    backfill = ObservedBackfill(namespace="fleet", name="lady-marina", uid="u", generation=1,
                                created=datetime(2025, 1, 1, tzinfo=UTC),
                                spec=BackfillSpec.from_dict({"yachtId": str(uuid.uuid4())}))
    return {e["name"]: e for e in build_job(backfill, 1, settings)["spec"]["template"][
        "spec"]["containers"][0]["env"]}


def test_the_redis_secret_reaches_the_operator_and_by_name_the_workers():
    values = {"redis": {"existingSecret": "search-cache", "key": "url"}}
    env = operator_env(render(values))
    assert env["REDIS_URL"] == env_from("search-cache", "url")  # the operator's own bumps
    assert (env["WORKER_REDIS_SECRET"], env["WORKER_REDIS_SECRET_KEY"]) == ("search-cache",
                                                                             "url")
    # What the operator makes of it: each Job references the Secret, never the value.
    assert job_env(env)["REDIS_URL"] == {"name": "REDIS_URL",
                                         "valueFrom": env_from("search-cache", "url")}


EDGE = {"accountId": "0123456789abcdef0123456789abcdef",
        "kvNamespaceId": "fedcba9876543210fedcba9876543210",
        "existingSecret": "f1backfill-cloudflare"}


def test_the_edge_kv_reaches_the_operator_and_by_name_the_workers():
    env = operator_env(render({"edge": EDGE}))
    assert env["CLOUDFLARE_ACCOUNT_ID"] == EDGE["accountId"]
    assert env["CLOUDFLARE_KV_NAMESPACE_ID"] == EDGE["kvNamespaceId"]
    assert env["CLOUDFLARE_API_TOKEN"] == env_from("f1backfill-cloudflare",
                                                   "CLOUDFLARE_API_TOKEN")
    assert (env["WORKER_CLOUDFLARE_SECRET"], env["WORKER_CLOUDFLARE_SECRET_KEY"]) == (
        "f1backfill-cloudflare", "CLOUDFLARE_API_TOKEN")
    # What the operator makes of it (its own token from the Secret): each Job references
    # the Secret, never the token.
    plain = {key: value for key, value in env.items() if isinstance(value, str)}
    settings = OperatorSettings.from_env({**plain, "CLOUDFLARE_API_TOKEN": "cf-token",
                                        "REDIS_URL": "redis://redis:6379/0"})
    backfill = ObservedBackfill(namespace="fleet", name="lady-marina", uid="u", generation=1,
                                created=datetime(2025, 1, 1, tzinfo=UTC),
                                spec=BackfillSpec.from_dict({"yachtId": str(uuid.uuid4())}))
    job = build_job(backfill, 1, settings)
    jobs = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert jobs["CLOUDFLARE_API_TOKEN"] == {
        "name": "CLOUDFLARE_API_TOKEN",
        "valueFrom": env_from("f1backfill-cloudflare", "CLOUDFLARE_API_TOKEN")}
    assert "cf-token" not in json.dumps(job)


def test_no_edge_kv_by_default_and_all_three_or_none():
    env = operator_env(render())
    assert [env[name] for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_KV_NAMESPACE_ID",
                                   "CLOUDFLARE_API_TOKEN", "WORKER_CLOUDFLARE_SECRET")] == [
        "", "", "", ""]
    for missing in EDGE:
        result = template({"edge": {**EDGE, missing: ""}})
        assert result.returncode != 0
        assert "set together, or none of them" in result.stderr


def test_redis_needs_no_rbac():
    # The kubelet reads a pod's Secrets, not the operator: its roles stay as they are.
    def roles(objects: list[dict]) -> list[dict]:
        return [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding",
                                                    "ClusterRoleBinding")]

    for values in ({}, {"watchNamespaces": ["fleet-a"]}):
        plain = render(values)
        with_redis = render({**values, "redis": {"existingSecret": "search-cache"}})
        assert roles(with_redis) == roles(plain)
        assert "secrets" not in json.dumps(roles(with_redis))


# --- peering ---------------------------------------------------------------------------------


def test_peering_object_cluster_wide():
    objects = render()
    peering = one(objects, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == operator_env(objects)["PEERING_NAME"] == "f1backfill"
    assert operator_env(objects)["STANDALONE"] == "false"
    assert not by_kind(objects, "KopfPeering")


def test_peering_objects_per_watched_namespace():
    objects = render_scenario("watch-namespaces")
    assert not by_kind(objects, "ClusterKopfPeering")
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["fleet-a", "fleet-b"]
    assert {p["metadata"]["name"] for p in peerings} == {"f1backfill"}
    assert operator_env(objects)["WATCH_NAMESPACES"] == "fleet-a,fleet-b"


def test_no_peering_object_when_standalone():
    objects = render_scenario("standalone")
    assert not by_kind(objects, "ClusterKopfPeering") and not by_kind(objects, "KopfPeering")
    assert operator_env(objects)["STANDALONE"] == "true"


def test_peering_objects_match_the_chart_peering_crds(scenario):
    _, objects = scenario
    crds = {c["spec"]["names"]["kind"]: c
            for c in by_kind(render(include_crds=True), "CustomResourceDefinition")}
    for obj in by_kind(objects, "ClusterKopfPeering") + by_kind(objects, "KopfPeering"):
        crd = crds[obj["kind"]]
        assert obj["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
        assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
        assert set(obj) <= {"apiVersion", "kind", "metadata"}  # kopf writes the status


# --- database --------------------------------------------------------------------------------


def test_external_database_by_default():
    objects = render()
    assert not by_kind(objects, "StatefulSet") and not by_kind(objects, "Secret")
    env = operator_env(objects)
    assert env["WORKER_DATABASE_SECRET"] == "f1backfill-database"
    assert env["WORKER_DATABASE_SECRET_KEY"] == "DATABASE_URL"


def test_existing_secret_and_key_reach_operator_workers_and_hooks():
    objects = render({"database": {"existingSecret": "prod-db", "key": "url"}})
    env = operator_env(objects)
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "prod-db", "key": "url"}}
    assert (env["WORKER_DATABASE_SECRET"], env["WORKER_DATABASE_SECRET_KEY"]) == ("prod-db",
                                                                                   "url")
    migrate = one(objects, "Job")
    (container,) = migrate["spec"]["template"]["spec"]["containers"]
    assert {"name": "DATABASE_URL", "valueFrom": env_from("prod-db", "url")} in container["env"]


def env_from(name: str, key: str) -> dict:
    return {"secretKeyRef": {"name": name, "key": key}}


def test_in_chart_postgres_with_pgvector_a_volume_and_a_readiness_probe():
    objects = render_scenario("postgresql")
    statefulset = one(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "pgvector/pgvector:pg17"
    assert "pg_isready" in " ".join(container["readinessProbe"]["exec"]["command"])
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    service = one(objects, "Service", "f1backfill-postgresql")
    assert service["spec"]["ports"][0]["port"] == 5432
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]


def test_in_chart_postgres_secret_in_every_namespace_where_workers_run():
    objects = render({"postgresql": {"enabled": True, "auth": {"password": "s3cret"}},
                      "watchNamespaces": ["fleet-a"],
                      "database": {"workerSecretNamespaces": ["default", "fleet-a"]}})
    secrets = {s["metadata"]["namespace"]: s for s in by_kind(objects, "Secret")}
    assert sorted(secrets) == ["default", NAMESPACE, "fleet-a"]
    urls = {ns: base64.b64decode(s["data"]["DATABASE_URL"]).decode() for ns, s in secrets.items()}
    assert set(urls.values()) == {
        "postgresql://f1backfill:s3cret@f1backfill-postgresql.f1backfill-system.svc.cluster.local"
        ":5432/f1backfill"}
    assert {s["metadata"]["name"] for s in secrets.values()} == {"f1backfill-database"}
    # Only the release namespace's copy carries the server's password on its own.
    assert [ns for ns, s in secrets.items() if "POSTGRES_PASSWORD" in s["data"]] == [NAMESPACE]
    env = operator_env(objects)
    assert env["WORKER_DATABASE_SECRET"] == "f1backfill-database"
    assert env["DATABASE_URL"] == env_from("f1backfill-database", "DATABASE_URL")


def test_a_generated_password_is_the_same_in_every_copy():
    secrets = by_kind(render_scenario("postgresql"), "Secret")
    urls = {base64.b64decode(s["data"]["DATABASE_URL"]).decode() for s in secrets}
    assert len(urls) == 1
    (own,) = [s for s in secrets if s["metadata"]["namespace"] == NAMESPACE]
    password = base64.b64decode(own["data"]["POSTGRES_PASSWORD"]).decode()
    assert len(password) == 32 and f":{password}@" in urls.pop()


# --- the in-chart Redis ----------------------------------------------------------------------

REDIS = "f1backfill-redis"


def b64(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def containers_of(deployment: dict) -> dict[str, dict]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_no_in_chart_redis_by_default():
    objects = render()
    assert not [o for o in objects if o["metadata"]["name"] == REDIS]


def test_in_chart_redis_is_one_cache_pod_that_persists_nothing():
    objects = render_scenario("redis-in-chart")
    deployment = one(objects, "Deployment", REDIS)
    assert deployment["spec"]["replicas"] == 1
    # Two servers behind the Service during a rollout would split the generations.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert [set(v) - {"name"} for v in pod["volumes"]] == [{"emptyDir"}]
    assert not by_kind(objects, "StatefulSet") and not by_kind(objects,
                                                               "PersistentVolumeClaim")
    container = containers_of(deployment)["redis"]
    assert container["image"] == "redis:7.4-alpine"
    command = container["command"][-1]
    for flag in ('--save ""', "--appendonly no", "--maxmemory 192mb",
                 "--maxmemory-policy volatile-lru", '--requirepass "$REDIS_PASSWORD"'):
        assert flag in command, flag
    assert "redis-cli ping" in " ".join(container["readinessProbe"]["exec"]["command"])
    service = one(objects, "Service", REDIS)
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_in_chart_redis_secret_in_every_namespace_where_workers_run():
    objects = render({"redis": {"enabled": True, "password": "s3cret"},
                      "watchNamespaces": ["fleet-a"],
                      "database": {"workerSecretNamespaces": ["default"]}})
    secrets = {s["metadata"]["namespace"]: s for s in by_kind(objects, "Secret")}
    assert sorted(secrets) == ["default", NAMESPACE, "fleet-a"]
    assert {s["metadata"]["name"] for s in secrets.values()} == {REDIS}
    assert {b64(s, "REDIS_URL") for s in secrets.values()} == {
        "redis://:s3cret@f1backfill-redis.f1backfill-system.svc.cluster.local:6379/0"}
    # Only the release namespace's copy carries the server's password on its own, and the
    # server reads it from there.
    assert [ns for ns, s in secrets.items() if "REDIS_PASSWORD" in s["data"]] == [NAMESPACE]
    env = {e["name"]: e for e in containers_of(one(objects, "Deployment", REDIS))["redis"]["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"] == env_from(REDIS, "REDIS_PASSWORD")


def test_a_generated_redis_password_is_the_same_in_every_copy():
    secrets = by_kind(render_scenario("redis-in-chart"), "Secret")
    assert len(secrets) == 2
    urls = {b64(s, "REDIS_URL") for s in secrets}
    assert len(urls) == 1
    (own,) = [s for s in secrets if s["metadata"]["namespace"] == NAMESPACE]
    password = b64(own, "REDIS_PASSWORD")
    assert len(password) == 32 and password.isalnum() and f":{password}@" in urls.pop()


def test_the_operator_and_the_workers_read_the_in_chart_redis_secret():
    # redis.existingSecret and redis.key are ignored: the chart's own Secret wins.
    objects = render({"redis": {"enabled": True, "existingSecret": "other", "key": "url"}})
    env = operator_env(objects)
    assert env["REDIS_URL"] == env_from(REDIS, "REDIS_URL")
    assert (env["WORKER_REDIS_SECRET"], env["WORKER_REDIS_SECRET_KEY"]) == (REDIS, "REDIS_URL")
    assert job_env(env)["REDIS_URL"]["valueFrom"] == env_from(REDIS, "REDIS_URL")


# --- hook Jobs ---------------------------------------------------------------------------------


def jobs_by_component(objects: list[dict]) -> dict[str, dict]:
    return {j["metadata"]["labels"]["app.kubernetes.io/component"]: j
            for j in by_kind(objects, "Job")}


def hook(job: dict) -> tuple[set[str], int]:
    annotations = job["metadata"]["annotations"]
    return set(annotations["helm.sh/hook"].split(",")), int(annotations["helm.sh/hook-weight"])


def test_migrations_run_before_install_and_upgrade_with_an_external_database():
    jobs = jobs_by_component(render())
    assert set(jobs) == {"migrations"}
    assert hook(jobs["migrations"]) == ({"pre-install", "pre-upgrade"}, 0)
    (container,) = jobs["migrations"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["f1backfill", "migrate"]
    assert "initContainers" not in jobs["migrations"]["spec"]["template"]["spec"]


def test_migrations_wait_for_the_in_chart_postgres_after_install():
    jobs = jobs_by_component(render_scenario("postgresql"))
    assert hook(jobs["migrations"]) == ({"post-install", "pre-upgrade"}, 0)
    (wait,) = jobs["migrations"]["spec"]["template"]["spec"]["initContainers"]
    assert "pg_isready" in " ".join(wait["command"])


@pytest.mark.parametrize("name", ["demo-seed", "demo-seed-postgresql"])
def test_demo_seed_runs_after_the_migrations(name):
    jobs = jobs_by_component(render_scenario(name))
    seed_hooks, seed_weight = hook(jobs["demo-seed"])
    migrate_hooks, migrate_weight = hook(jobs["migrations"])
    assert seed_hooks == {"post-install"}
    # Same phase (post-install): Helm runs lower weights first and waits for each Job.
    assert "post-install" not in migrate_hooks or migrate_weight < seed_weight
    (container,) = jobs["demo-seed"]["spec"]["template"]["spec"]["containers"]
    # The demo image: the product image has no sandbox, hence no `seed`.
    assert container["command"] == ["f1sandbox", "seed"]
    assert container["image"] == "f1backfill-demo:0.1.0"


def test_the_demo_seed_runs_the_demo_image_it_is_given():
    jobs = jobs_by_component(render({"demo": {"seed": True, "image": {
        "repository": "registry.example/f1-demo", "tag": "1.2.3"}}}))
    (container,) = jobs["demo-seed"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/f1-demo:1.2.3"
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_no_demo_seed_by_default():
    assert "demo-seed" not in jobs_by_component(render())


def test_hook_jobs_are_replaced_on_the_next_run_and_removed_when_they_succeed(scenario):
    _, objects = scenario
    for job in by_kind(objects, "Job"):
        policy = job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert set(policy.split(",")) == {"before-hook-creation", "hook-succeeded"}


# --- the feedback CronJob --------------------------------------------------------------------


def test_feedback_cronjob_is_on_by_default():
    cronjob = one(render(), "CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["f1backfill", "feedback", "learn"]


def test_feedback_cronjob_runs_nightly_when_enabled():
    cronjob = one(render_scenario("feedback"), "CronJob")
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["f1backfill", "feedback", "learn"]


def test_chart_jobs_never_look_like_the_operators_embedding_jobs(scenario):
    """The operator watches Jobs labelled managed-by=f1backfill-operator: a hook or feedback
    Job with that label would be taken for an embedding Job."""
    _, objects = scenario
    for obj in by_kind(objects, "Job") + by_kind(objects, "CronJob"):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_service_targets_the_operators_metrics_port():
    objects = render()
    service = one(objects, "Service", "f1backfill-metrics")
    deployment = one(objects, "Deployment", OPERATOR)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090,
                                         "targetPort": "metrics", "protocol": "TCP"}]


def test_monitoring_objects_need_the_value_and_the_api():
    kinds = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not kinds & {o["kind"] for o in render_scenario("monitoring-without-crds")}
    assert not kinds & {o["kind"] for o in render(api_versions=(MONITORING,))}
    assert kinds <= {o["kind"] for o in render_scenario("monitoring")}


def test_service_monitor_selects_the_metrics_service():
    objects = render_scenario("monitoring")
    monitor = one(objects, "ServiceMonitor", "f1backfill")
    service = one(objects, "Service", "f1backfill-metrics")
    assert monitor["apiVersion"] == MONITORING
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


@pytest.mark.parametrize("name", ["monitoring", "everything"])
def test_pod_monitor_selects_the_worker_pods_the_operator_creates(name):
    monitor = one(render_scenario(name), "PodMonitor")
    assert monitor["apiVersion"] == MONITORING
    spec = BackfillSpec.from_dict({"yachtId": "28191ed2-7cc7-43b2-a48a-c13674cfbc1c"})
    backfill = ObservedBackfill(namespace="fleet", name="b", uid="u", generation=1,
                                created=datetime(2025, 1, 1, tzinfo=UTC), spec=spec)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= job_labels(backfill, 1).items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and WORKER_PORT == 8080
    watched = SCENARIOS[name][0].get("watchNamespaces")
    assert monitor["spec"]["namespaceSelector"] == (
        {"matchNames": watched} if watched else {"any": True})


DEFAULT_ALERTS = {
    # alert: (expression, severity)
    "F1EmbeddingQueueDepthHigh": (
        'max by (yacht_id) (f1_embedding_queue_depth{status="queued"}) > 10000', "warning"),
    "F1WorkerMemoryHigh": ("max by (namespace, pod) (f1_worker_memory_mb) > 450", "warning"),
    "F1CircuitBreakerOpen": ("max by (namespace, pod) (f1_circuit_breaker_state) == 1",
                             "critical"),
    "F1EmbeddingErrorRateHigh": (
        'sum by (yacht_id) (rate(f1_embeddings_processed_total{status="failed"}[5m])) > 0.01',
        "warning"),
    "F1DLQGrowing": ("sum(max by (yacht_id) (f1_dlq_unresolved)) > 100", "warning"),
    "F1DLQCritical": ("sum(max by (yacht_id) (f1_dlq_unresolved)) > 1000", "critical"),
}


def alert_rules(objects: list[dict]) -> dict[str, dict]:
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == MONITORING
    assert set(rule["spec"]) == {"groups"}
    rules = {}
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for r in group["rules"]:
            assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r
            assert re.fullmatch(r"\d+[smh]", r["for"])
            assert r["annotations"]["summary"] and r["annotations"]["description"]
            rules[r["alert"]] = r
    return rules


def test_alert_rules_carry_the_default_thresholds_in_promql():
    rules = alert_rules(render_scenario("monitoring"))
    assert {name: (r["expr"], r["labels"]["severity"]) for name, r in rules.items()} \
        == DEFAULT_ALERTS
    assert rules["F1DLQGrowing"]["for"] == "10m" and rules["F1DLQCritical"]["for"] == "5m"
    for name in ("F1DLQGrowing", "F1DLQCritical"):  # what the metric counts, for on-call
        assert "embedding_dlq" in rules[name]["annotations"]["description"]


def test_alert_rules_name_only_exported_metrics_and_parse():
    exported = exported_metrics()
    for rule in alert_rules(render_scenario("monitoring")).values():
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        names = metric_names(expr)
        assert names and names <= exported, (rule["alert"], names - exported)


def test_alert_thresholds_are_values():
    thresholds = {"queueDepth": 500, "workerMemoryMb": 400, "errorRate": 0.5,
                  "dlqWarning": 7, "dlqCritical": 70}
    rules = alert_rules(render({"metrics": {"prometheusRule": {
        "enabled": True, "thresholds": thresholds}}}, api_versions=(MONITORING,)))
    assert rules["F1EmbeddingQueueDepthHigh"]["expr"].endswith("> 500")
    assert rules["F1WorkerMemoryHigh"]["expr"].endswith("> 400")
    assert rules["F1EmbeddingErrorRateHigh"]["expr"].endswith("> 0.5")
    assert rules["F1DLQGrowing"]["expr"].endswith("> 7")
    assert rules["F1DLQCritical"]["expr"].endswith("> 70")


def test_grafana_dashboard_has_the_alerts_and_operator_panels():
    configmap = one(render_scenario("monitoring"), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    dashboard = json.loads(text)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= exported_metrics(), used - exported_metrics()
    for metric in ("f1_embedding_queue_depth", "f1_worker_memory_mb", "f1_circuit_breaker_state",
                   "f1_embeddings_processed_total", "f1_dlq_unresolved", "f1_drift_stale_rows",
                   "f1_backfill_phase", "f1_backfill_progress_percent"):
        assert metric in used, metric
    assert 'rate(f1_embeddings_processed_total{status="failed"}[5m])' in " ".join(exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"


def test_no_dashboard_by_default():
    assert not by_kind(render(), "ConfigMap")


# --- NOTES.txt -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "everything"])
def test_notes_tell_the_user_how_to_watch_the_fleet(name):
    values, _ = SCENARIOS[name]
    # `helm install --dry-run=client` prints NOTES (`helm template` does not); it has no
    # --api-versions, so the monitoring objects are skipped and the notes say so.
    args = [str(helm_binary()), "install", "f1backfill", str(CHART), "--dry-run=client",
            "--namespace", NAMESPACE, *values_args(values)]
    result = subprocess.run(args, capture_output=True, text=True, env=helm_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    notes = result.stdout[result.stdout.index("NOTES:"):]
    for command in ("kubectl get yachtbackfills -A -w", "kubectl get yb -A -w",
                    "kubectl describe yb", "-f manifests/samples/",
                    "kubectl apply --server-side --force-conflicts -f charts/f1backfill/crds/",
                    "port-forward svc/f1backfill-search 8000"):
        assert command in notes, command
    assert ("does not\n   serve monitoring.coreos.com/v1" in notes) == (name == "everything")


# --- values.yaml -------------------------------------------------------------------------------


def schema_paths(schema: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Key paths the schema declares, down to free-form maps (labels...) and Kubernetes
    types (`resources`: a ResourceRequirements, documented by Kubernetes)."""
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add((*prefix, key))
        if sub.get("additionalProperties") is False and key != "resources":
            paths |= schema_paths(sub, (*prefix, key))
    return paths


def commented_keys(text: str) -> dict[tuple[str, ...], bool]:
    """Each key path of a block-style YAML file and whether a comment documents it (on the
    lines right above, or at the end of its line)."""
    out: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*):(.*)$", line)
        if match:
            indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            out[tuple(k for _, k in stack)] = previous.startswith("#") or " # " in rest
        previous = line.strip()
    return out


def test_every_values_key_is_commented_and_declared_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    declared = schema_paths(schema) - {("global",)}
    commented = commented_keys((CHART / "values.yaml").read_text())
    chart_keys = {path for path in commented if path in declared}
    assert chart_keys == declared, declared ^ chart_keys
    undocumented = sorted(".".join(p) for p in chart_keys if not commented[p])
    assert not undocumented


def test_values_yaml_says_how_to_upgrade_the_crds():
    text = (CHART / "values.yaml").read_text()
    assert "kubectl apply --server-side --force-conflicts -f charts/f1backfill/crds/" in text


def test_values_file_is_what_helm_reads():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"] == {"repository": "f1backfill", "tag": "", "pullPolicy": "IfNotPresent"}
    assert values["embedding"]["defaultProvider"] == "hash"
    assert values["postgresql"]["enabled"] is False and values["demo"]["seed"] is False
    assert values["feedback"]["enabled"] is True
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["appVersion"]) == ("v2", "0.1.0")


def test_app_version_is_the_products_version():
    import tomllib

    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"]
