"""The search front door (`f1backfill serve`) as the chart renders it: its Deployment,
Service, ServiceAccount, PodDisruptionBudget and ServiceMonitor, the settings it gets and
where its credentials come from. The objects' validity against Kubernetes and the
restricted profile are checked for every scenario in test_chart_render.py and
test_chart_security.py; this file holds what is particular to the front door.
"""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import pytest

from f1backfill.admission import ObservedBackfill
from f1backfill.api import BackfillSpec
from f1backfill.builders.job import build_job
from f1backfill.config import OperatorSettings, ServeSettings
from f1backfill.frontdoor.server import auth_settings
from tests.support.helm import (
    MONITORING,
    NAMESPACE,
    SCENARIOS,
    by_kind,
    container_env,
    one,
    render,
    render_scenario,
    require_helm,
)

require_helm()

OPERATOR = "f1backfill"
SEARCH = "f1backfill-search"
# ServeSettings the chart leaves to the product's defaults on purpose: tuning that
# `search.extraEnv` can still set.
NOT_EXPOSED = {"JWT_LEEWAY_SEC", "SEARCH_DEFAULT_LIMIT", "SEARCH_MAX_LIMIT",
               "PREWARM_CONCURRENCY", "PREWARM_TOP_QUERIES", "FEEDBACK_MAX_QUERY_CHARS",
               "REQUEST_TIMEOUT_SEC"}
# What a Secret holds, for the settings' own validation (never in the chart's output).
SECRET_VALUES = {"DATABASE_URL": "postgresql://search@db/f1",
                 "REDIS_URL": "redis://:pw@cache:6379/0",
                 "JWT_SECRET": "x" * 64,
                 "OPENAI_API_KEY": "sk-test"}
CREDENTIALS = {*SECRET_VALUES, "POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDISCLI_AUTH"}
SEARCH_SCENARIOS = sorted(name for name, (values, _) in SCENARIOS.items()
                          if values.get("search", {}).get("enabled", True))


def ref(name: str, key: str) -> dict:
    return {"secretKeyRef": {"name": name, "key": key}}


def search_deployment(objects: list[dict]) -> dict:
    return one(objects, "Deployment", SEARCH)


def search_container(objects: list[dict]) -> dict:
    (container,) = search_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


def search_env(objects: list[dict]) -> dict[str, Any]:
    return container_env(search_deployment(objects))


def serve_settings(env: dict[str, Any]) -> ServeSettings:
    """What `f1backfill serve` makes of the chart's environment: each Secret reference
    replaced by a value of the right shape, then the settings' own validation."""
    resolved = {name: SECRET_VALUES[name] if isinstance(value, dict) else value
                for name, value in env.items()}
    return ServeSettings.from_env(resolved)


def search_objects(objects: list[dict]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects
                  if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                  == "search")


# --- the Deployment and its Service -----------------------------------------------------------


def test_search_runs_two_replicas_of_serve_by_default():
    objects = render()
    deployment = search_deployment(objects)
    assert deployment["spec"]["replicas"] == 2
    # A rollout never takes a serving pod away before its successor is ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1,
                                                               "maxUnavailable": 0}
    container = search_container(objects)
    operator = one(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == operator["image"]  # one image, many commands
    assert container["command"] == ["f1backfill", "serve", "--host", "0.0.0.0",
                                    "--port", "8000"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["resources"]["limits"]["memory"]


def test_search_service_is_cluster_internal_on_port_http_and_selects_only_search_pods():
    objects = render()
    service = one(objects, "Service", SEARCH)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http",
                                         "protocol": "TCP"}]
    selector = service["spec"]["selector"].items()
    assert selector <= search_deployment(objects)["spec"]["template"]["metadata"][
        "labels"].items()
    operator_pods = one(objects, "Deployment", OPERATOR)["spec"]["template"]["metadata"][
        "labels"].items()
    assert not selector <= operator_pods


def test_the_port_is_a_value():
    objects = render({"search": {"port": 8443}})
    container = search_container(objects)
    assert container["command"][-1] == "8443"
    assert container["ports"][0]["containerPort"] == 8443
    assert one(objects, "Service", SEARCH)["spec"]["ports"][0]["port"] == 8443


def test_readiness_on_health_liveness_not_on_the_dependencies():
    container = search_container(render())
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # /health answers 503 while Postgres or Redis is away: liveness there would restart
    # every replica during a dependency blip. It asks the process alone.
    liveness = container["livenessProbe"]
    assert liveness["httpGet"]["port"] == "http"
    assert liveness["httpGet"]["path"] != "/health"
    assert liveness["httpGet"]["path"] == "/metrics"
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 60


def test_search_pods_have_the_operators_restricted_security_and_no_token():
    objects = render()
    search_pod = search_deployment(objects)["spec"]["template"]["spec"]
    operator_pod = one(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert search_pod["securityContext"] == operator_pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert search_container(objects)["securityContext"] == \
        operator_pod["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert search_pod["automountServiceAccountToken"] is False


def test_search_has_its_own_service_account_without_token_or_rbac():
    objects = render()
    account = one(objects, "ServiceAccount", SEARCH)
    assert account["automountServiceAccountToken"] is False
    assert search_deployment(objects)["spec"]["template"]["spec"][
        "serviceAccountName"] == SEARCH
    bindings = by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
    subjects = [s["name"] for b in bindings for s in b.get("subjects", [])]
    assert subjects and SEARCH not in subjects


def test_the_service_account_can_be_named_or_brought():
    named = render({"search": {"serviceAccount": {"name": "f1-search"}}})
    assert one(named, "ServiceAccount", "f1-search")["automountServiceAccountToken"] is False
    brought = render({"search": {"serviceAccount": {"create": False, "name": "mine"}}})
    assert not [a for a in by_kind(brought, "ServiceAccount")
                if a["metadata"]["name"] != OPERATOR]
    assert search_deployment(brought)["spec"]["template"]["spec"][
        "serviceAccountName"] == "mine"


# --- settings ----------------------------------------------------------------------------------


def test_search_gets_every_setting_a_user_would_set():
    settings_env = {f.metadata["env"] for f in fields(ServeSettings)}
    given: set[str] = set()
    # HS256 with a Secret by default, a JWKS URL instead, the openai provider's key.
    for values in ({}, SCENARIOS["search-jwks"][0], SCENARIOS["openai"][0]):
        given |= set(search_env(render(values)))
    assert given == settings_env - NOT_EXPOSED, given ^ (settings_env - NOT_EXPOSED)


@pytest.mark.parametrize("name", SEARCH_SCENARIOS)
def test_serve_accepts_the_environment_the_chart_gives_it(name):
    objects = render_scenario(name)
    settings = serve_settings(search_env(objects))
    auth_settings(settings).validate()  # what `serve` checks before it listens
    values, _ = SCENARIOS[name]
    migrate = one(objects, "Job", "f1backfill-migrate")
    assert {"name": "EMBEDDING_DIMENSIONS", "value": str(settings.dimensions)} in \
        migrate["spec"]["template"]["spec"]["containers"][0]["env"]
    assert settings.provider == values.get("embedding", {}).get("defaultProvider", "hash")
    assert settings.roles()  # the mapping parses and names at least one role


def test_search_defaults_match_serves_own():
    settings = serve_settings(search_env(render()))
    defaults = ServeSettings(**{f.name: getattr(settings, f.name) for f in fields(settings)
                                if f.metadata.get("secret")})
    differing = {f.name for f in fields(ServeSettings)
                 if getattr(settings, f.name) != getattr(defaults, f.name)}
    # The mapping is written in another order (a map's keys are sorted): same roles.
    assert differing == {"role_object_types"}
    assert settings.roles() == defaults.roles()


def test_roles_are_a_map_merged_with_the_default_one():
    # Helm merges the user's map into the chart's: a role set to null goes away.
    values = {"search": {"roleObjectTypes": {"crew": None, "captain": ["document"],
                                             "deckhand": ["work_order", "equipment"]}}}
    roles = serve_settings(search_env(render(values))).roles()
    assert roles == {"captain": frozenset({"document"}), "officer": None,
                     "engineer": frozenset({"work_order", "equipment", "document",
                                            "certificate"}),
                     "deckhand": frozenset({"work_order", "equipment"})}


def test_cache_ttl_and_log_level_are_values():
    env = search_env(render({"search": {"cacheTtlSeconds": 900, "logLevel": "DEBUG"}}))
    assert (env["CACHE_TTL_SEARCH"], env["LOG_LEVEL"]) == ("900", "DEBUG")


def test_extra_env_reaches_serve():
    env = search_env(render({"search": {"extraEnv": [{"name": "SEARCH_MAX_LIMIT",
                                                      "value": "50"}]}}))
    assert serve_settings(env).max_limit == 50


# --- embeddings: as the workers embed ----------------------------------------------------------


def test_queries_are_embedded_as_the_workers_embed_by_default():
    objects = render({"migrations": {"embeddingDimensions": 3072}})
    env, operator = search_env(objects), container_env(one(objects, "Deployment", OPERATOR))
    assert env["EMBEDDING_PROVIDER"] == operator["DEFAULT_EMBEDDING_PROVIDER"] == "hash"
    assert env["EMBEDDING_DIMENSIONS"] == "3072"
    # Empty: serve's default model, which is the YachtBackfill's default.
    assert env["EMBEDDING_MODEL"] == ""
    assert serve_settings(env).model == BackfillSpec.from_dict(
        {"yachtId": str(uuid.uuid4())}).embedding.model
    assert "OPENAI_API_KEY" not in env


def test_with_openai_search_reads_the_workers_key_secret_and_base_url():
    values, _ = SCENARIOS["openai"]
    objects = render(values)
    env, operator = search_env(objects), container_env(one(objects, "Deployment", OPERATOR))
    assert env["EMBEDDING_PROVIDER"] == "openai"
    assert env["OPENAI_API_KEY"] == ref(operator["WORKER_OPENAI_SECRET"],
                                        operator["WORKER_OPENAI_SECRET_KEY"])
    assert env["OPENAI_BASE_URL"] == operator["OPENAI_BASE_URL"] == values["openai"]["baseUrl"]


def test_search_can_embed_with_its_own_provider_and_model():
    objects = render({"search": {"embedding": {"provider": "openai",
                                               "model": "text-embedding-3-large"}}})
    env, operator = search_env(objects), container_env(one(objects, "Deployment", OPERATOR))
    assert (env["EMBEDDING_PROVIDER"], env["EMBEDDING_MODEL"]) == ("openai",
                                                                    "text-embedding-3-large")
    # The Secret name the workers use for CRs that choose openai themselves.
    assert env["OPENAI_API_KEY"] == ref(operator["WORKER_OPENAI_SECRET"], "OPENAI_API_KEY")


# --- credentials: by reference, one Secret per dependency ---------------------------------------


def test_the_jwt_secret_comes_by_reference_only():
    env = search_env(render())
    assert env["JWT_SECRET"] == ref("f1backfill-jwt", "JWT_SECRET")
    assert env["JWT_ALGORITHM"] == "HS256"
    assert "JWT_JWKS_URL" not in env
    custom = search_env(render({"search": {"jwt": {"existingSecret": "tokens", "key": "k"}}}))
    assert custom["JWT_SECRET"] == ref("tokens", "k")


def test_with_a_jwks_url_no_secret_is_read():
    values, _ = SCENARIOS["search-jwks"]
    env = search_env(render(values))
    assert "JWT_SECRET" not in env
    jwt = values["search"]["jwt"]
    assert (env["JWT_ALGORITHM"], env["JWT_JWKS_URL"], env["JWT_AUDIENCE"],
            env["JWT_ISSUER"]) == (jwt["algorithm"], jwt["jwksUrl"], jwt["audience"],
                                   jwt["issuer"])
    # The default Secret name is ignored, not read: RS256 with a secret is refused by serve.
    env = search_env(render({"search": {"jwt": {"algorithm": "ES256",
                                                "jwksUrl": jwt["jwksUrl"]}}}))
    assert "JWT_SECRET" not in env
    auth_settings(serve_settings(env)).validate()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_credential_is_ever_a_literal(name):
    """Every container of every scenario: a credential is a secretKeyRef or empty."""
    for obj in render_scenario(name):
        spec = obj.get("spec", {})
        pod = (spec.get("jobTemplate", {}).get("spec", spec).get("template", {})
               .get("spec", {}))
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for var in container.get("env", []):
                if var["name"] in CREDENTIALS:
                    assert "valueFrom" in var or var.get("value") == "", (
                        f"{obj['kind']}/{obj['metadata']['name']}: {var['name']}")


def test_search_reads_the_operators_database_secret():
    for values in ({}, {"database": {"existingSecret": "prod-db", "key": "url"}},
                   {"postgresql": {"enabled": True}}):
        objects = render(values)
        operator = container_env(one(objects, "Deployment", OPERATOR))
        env = search_env(objects)
        assert env["DATABASE_URL"] == operator["DATABASE_URL"]
        assert env["DATABASE_URL"] == ref(operator["WORKER_DATABASE_SECRET"],
                                          operator["WORKER_DATABASE_SECRET_KEY"])


def worker_redis(operator: dict[str, Any]) -> dict | None:
    """REDIS_URL of a Job the operator creates with the chart's settings."""
    plain = {key: value for key, value in operator.items() if isinstance(value, str)}
    settings = OperatorSettings.from_env({**plain, **SECRET_VALUES})
    backfill = ObservedBackfill(namespace="fleet-a", name="b", uid="u", generation=1,
                                created=datetime(2025, 1, 1, tzinfo=UTC),
                                spec=BackfillSpec.from_dict({"yachtId": str(uuid.uuid4())}))
    env = build_job(backfill, 1, settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("valueFrom") for e in env}.get("REDIS_URL")


@pytest.mark.parametrize(("name", "secret", "key"), [
    ("defaults", "f1backfill-redis", "REDIS_URL"),
    ("everything", "f1backfill-redis", "url"),
    ("redis-in-chart", "f1backfill-redis", "REDIS_URL"),
    ("kind", "f1backfill-redis", "REDIS_URL"),
])
def test_operator_workers_and_search_read_one_redis_secret(name, secret, key):
    objects = render_scenario(name)
    operator = container_env(one(objects, "Deployment", OPERATOR))
    expected = ref(secret, key)
    assert operator["REDIS_URL"] == expected  # the operator's bump when a Job ends
    assert (operator["WORKER_REDIS_SECRET"], operator["WORKER_REDIS_SECRET_KEY"]) == (secret,
                                                                                       key)
    assert worker_redis(operator) == expected  # each batch's bump
    assert search_env(objects)["REDIS_URL"] == expected  # the cache it bumps
    values, _ = SCENARIOS[name]
    if values.get("redis", {}).get("enabled"):
        # The chart wrote that Secret wherever a client runs.
        copies = {s["metadata"]["namespace"] for s in by_kind(objects, "Secret")
                  if s["metadata"]["name"] == secret and key in s["data"]}
        assert {NAMESPACE, *values.get("watchNamespaces", [])} <= copies


# --- switched off, disruption budget, monitoring -------------------------------------------------


def test_search_disabled_renders_no_search_objects():
    objects = render_scenario("no-search")
    assert search_objects(objects) == []
    assert not [o for o in objects if "search" in o["metadata"]["name"]]
    monitored = render({"search": {"enabled": False},
                        "metrics": {"serviceMonitor": {"enabled": True}}},
                       api_versions=(MONITORING,))
    assert [m["metadata"]["name"] for m in by_kind(monitored, "ServiceMonitor")] == [OPERATOR]


def test_search_enabled_renders_exactly_its_objects():
    assert search_objects(render()) == [("Deployment", SEARCH), ("PodDisruptionBudget", SEARCH),
                                        ("Service", SEARCH), ("ServiceAccount", SEARCH)]


def test_a_disruption_budget_keeps_one_search_pod_up():
    objects = render()
    budget = one(objects, "PodDisruptionBudget", SEARCH)
    assert budget["spec"]["minAvailable"] == 1
    # Pods that serve nothing (not ready) never hold a drain up.
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    labels = search_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    operator_labels = one(objects, "Deployment", OPERATOR)["spec"]["template"]["metadata"][
        "labels"]
    assert not budget["spec"]["selector"]["matchLabels"].items() <= operator_labels.items()


@pytest.mark.parametrize("values", [
    {"search": {"replicas": 1}},  # minAvailable 1 of 1 would block every node drain
    {"search": {"podDisruptionBudget": {"enabled": False}}},
])
def test_no_disruption_budget_with_one_replica_or_when_switched_off(values):
    assert not by_kind(render(values), "PodDisruptionBudget")


def test_a_service_monitor_scrapes_search_like_the_operator():
    objects = render_scenario("monitoring")
    monitor = one(objects, "ServiceMonitor", SEARCH)
    operator_monitor = one(objects, "ServiceMonitor", OPERATOR)
    service = one(objects, "Service", SEARCH)
    assert monitor["apiVersion"] == MONITORING
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= \
        one(objects, "Service", "f1backfill-metrics")["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics",
                        "interval": operator_monitor["spec"]["endpoints"][0]["interval"]}
    assert monitor["spec"]["namespaceSelector"] == operator_monitor["spec"]["namespaceSelector"]


def test_search_pods_are_spread_over_nodes_where_possible():
    pod = search_deployment(render())["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # never blocks scheduling
    assert spread["topologyKey"] == "kubernetes.io/hostname"

