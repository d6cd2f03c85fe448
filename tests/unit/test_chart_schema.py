"""values.schema.json (and the chart's `fail` checks) refuse bad values, naming the key.

Each case runs the real `helm template` and `helm lint` with one bad value on top of the
defaults; both must fail and say where (lint: schema cases only, see FAILED_BY_TEMPLATE).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.support.helm import CHART, lint, require_helm, template

require_helm()

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# (values on top of the defaults, what the error must contain)
BAD_VALUES = {
    "replicas-zero": ({"replicaCount": 0}, "/replicaCount"),
    "replicas-not-a-number": ({"replicaCount": "two"}, "/replicaCount"),
    "pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "empty-repository": ({"image": {"repository": ""}}, "/image/repository"),
    "empty-demo-repository": ({"demo": {"image": {"repository": ""}}},
                              "/demo/image/repository"),
    "provider": ({"embedding": {"defaultProvider": "cohere"}}, "/embedding/defaultProvider"),
    "openai-without-secret": ({"embedding": {"defaultProvider": "openai"}},
                              "/openai/existingSecret"),
    "openai-base-url": ({"openai": {"baseUrl": "ftp://example.com"}}, "/openai/baseUrl"),
    "no-database": ({"database": {"existingSecret": ""}}, "/database/existingSecret"),
    "redis-secret-name": ({"redis": {"existingSecret": "Search_Cache"}},
                          "/redis/existingSecret"),
    "redis-secret-key": ({"redis": {"key": "a key"}}, "/redis/key"),
    "redis-max-memory": ({"redis": {"enabled": True, "maxMemory": "192mb --save 60"}},
                         "/redis/maxMemory"),
    "redis-password-not-url-safe": ({"redis": {"enabled": True, "password": "p@ss/word"}},
                                    "/redis/password"),
    "redis-pull-policy": ({"redis": {"image": {"pullPolicy": "Sometimes"}}},
                          "/redis/image/pullPolicy"),
    "standalone-with-replicas": ({"replicaCount": 2,
                                  "operator": {"peering": {"standalone": True}}},
                                 "/replicaCount"),
    "max-concurrent-jobs-zero": ({"operator": {"maxConcurrentJobs": 0}},
                                 "/operator/maxConcurrentJobs"),
    "max-concurrent-jobs-too-many": ({"operator": {"maxConcurrentJobs": 1001}},
                                     "/operator/maxConcurrentJobs"),
    "reconcile-interval": ({"operator": {"reconcileIntervalSeconds": 0.1}},
                           "/operator/reconcileIntervalSeconds"),
    "log-level": ({"operator": {"logLevel": "verbose"}}, "/operator/logLevel"),
    "health-port": ({"operator": {"healthPort": 0}}, "/operator/healthPort"),
    "peering-name": ({"operator": {"peering": {"name": "Not A Name"}}},
                     "/operator/peering/name"),
    "fleet-rpm": ({"fleetRateLimit": {"requestsPerMinute": 0}},
                  "/fleetRateLimit/requestsPerMinute"),
    "fleet-tpm-string": ({"fleetRateLimit": {"tokensPerMinute": "1M"}},
                         "/fleetRateLimit/tokensPerMinute"),
    "job-deadline": ({"jobs": {"activeDeadlineSeconds": 30}}, "/jobs/activeDeadlineSeconds"),
    "job-backoff": ({"jobs": {"backoffLimit": -1}}, "/jobs/backoffLimit"),
    "dlq-threshold": ({"dlq": {"warningThreshold": 0}}, "/dlq/warningThreshold"),
    "watch-namespace-name": ({"watchNamespaces": ["Fleet_A"]}, "/watchNamespaces/0"),
    "watch-namespaces-twice": ({"watchNamespaces": ["fleet", "fleet"]}, "/watchNamespaces"),
    "worker-secret-namespace": ({"database": {"workerSecretNamespaces": ["-x"]}},
                                "/database/workerSecretNamespaces/0"),
    "typo-in-a-key": ({"postgresql": {"enable": True}}, "'enable'"),
    "unknown-top-level-key": ({"replicas": 2}, "'replicas'"),
    "password-not-url-safe": ({"postgresql": {"enabled": True,
                                              "auth": {"password": "p@ss/word"}}},
                              "/postgresql/auth/password"),
    "storage-size": ({"postgresql": {"persistence": {"size": "lots"}}},
                     "/postgresql/persistence/size"),
    "embedding-dimensions": ({"migrations": {"embeddingDimensions": 0}},
                             "/migrations/embeddingDimensions"),
    "feedback-schedule": ({"feedback": {"schedule": "nightly"}}, "/feedback/schedule"),
    "scrape-interval": ({"metrics": {"serviceMonitor": {"interval": "30"}}},
                        "/metrics/serviceMonitor/interval"),
    "alert-threshold": ({"metrics": {"prometheusRule": {"thresholds": {"errorRate": 0}}}},
                        "/metrics/prometheusRule/thresholds/errorRate"),
    "resources-shape": ({"operator": {"resources": {"limit": {"cpu": 1}}}}, "'limit'"),
    "search-replicas-zero": ({"search": {"replicas": 0}}, "/search/replicas"),
    "search-privileged-port": ({"search": {"port": 80}}, "/search/port"),
    "search-cache-ttl": ({"search": {"cacheTtlSeconds": 0}}, "/search/cacheTtlSeconds"),
    "search-log-level": ({"search": {"logLevel": "loud"}}, "/search/logLevel"),
    "search-jwt-algorithm": ({"search": {"jwt": {"algorithm": "none"}}},
                             "/search/jwt/algorithm"),
    "search-jwks-url": ({"search": {"jwt": {"jwksUrl": "file:///etc/keys.json"}}},
                        "/search/jwt/jwksUrl"),
    "search-jwt-secret-name": ({"search": {"jwt": {"existingSecret": "JWT Secret"}}},
                               "/search/jwt/existingSecret"),
    # There is no key for the secret itself: it can only come from a Secret.
    "search-jwt-secret-literal": ({"search": {"jwt": {"secret": "s3cret"}}}, "'secret'"),
    "search-role-object-type": ({"search": {"roleObjectTypes": {"crew": ["Work Orders"]}}},
                                "/search/roleObjectTypes/crew/0"),
    "search-role-name": ({"search": {"roleObjectTypes": {"crew=all": ["*"]}}}, "'crew=all'"),
    "search-role-without-types": ({"search": {"roleObjectTypes": {"crew": []}}},
                                  "/search/roleObjectTypes/crew"),
    "search-provider": ({"search": {"embedding": {"provider": "cohere"}}},
                        "/search/embedding/provider"),
    "search-pdb-typo": ({"search": {"podDisruptionBudget": {"enable": True}}}, "'enable'"),
    "search-without-redis": ({"redis": {"existingSecret": ""}}, "/redis/existingSecret"),
}
# What JSON schema cannot compare: the chart's `fail` checks (templates/_helpers.tpl).
# `helm lint` deliberately turns `fail` into an INFO line, so only install/template refuse.
FAILED_BY_TEMPLATE = {
    "dlq-critical-below-warning": ({"dlq": {"warningThreshold": 100,
                                            "criticalThreshold": 50}},
                                   "dlq.criticalThreshold"),
    "same-ports": ({"operator": {"healthPort": 9090, "metricsPort": 9090}},
                   "operator.healthPort and operator.metricsPort"),
    "search-without-jwt-secret-or-jwks-url": ({"search": {"jwt": {"existingSecret": ""}}},
                                              "search.jwt.existingSecret"),
    "search-jwks-url-with-hs256": ({"search": {"jwt": {
        "jwksUrl": "https://id.example.com/jwks.json"}}}, "search.jwt.algorithm"),
    "search-rs256-without-jwks-url": ({"search": {"jwt": {"algorithm": "RS256"}}},
                                      "search.jwt.jwksUrl"),
}

GOOD_VALUES = {
    "bounds": {"operator": {"maxConcurrentJobs": 1000, "reconcileIntervalSeconds": 0.2},
               "jobs": {"activeDeadlineSeconds": 60, "backoffLimit": 0}},
    "replicas-with-peering": {"replicaCount": 3},
    "in-chart-database-needs-no-secret": {"postgresql": {"enabled": True},
                                          "database": {"existingSecret": ""}},
    "openai-with-secret": {"embedding": {"defaultProvider": "openai"},
                           "openai": {"existingSecret": "key", "baseUrl": "http://llm:8000/v1"}},
    "dlq-equal-thresholds": {"dlq": {"warningThreshold": 10, "criticalThreshold": 10}},
    "redis": {"redis": {"existingSecret": "f1backfill-redis", "key": "REDIS_URL"}},
    "in-chart-redis-needs-no-secret": {"redis": {"enabled": True, "existingSecret": ""}},
    "cron-macro": {"feedback": {"enabled": True, "schedule": "@daily"}},
    "search-with-a-jwks-url-needs-no-secret": {"search": {"jwt": {
        "existingSecret": "", "algorithm": "ES256",
        "jwksUrl": "https://id.example.com/.well-known/jwks.json"}}},
    "search-with-the-in-chart-redis": {"redis": {"enabled": True, "existingSecret": ""}},
    "no-search-needs-no-jwt-nor-redis": {"search": {"enabled": False,
                                                    "jwt": {"existingSecret": ""}},
                                         "redis": {"existingSecret": ""}},
    "search-role-removed": {"search": {"roleObjectTypes": {"crew": None}}},
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES) + sorted(FAILED_BY_TEMPLATE))
def test_helm_template_refuses_bad_values_naming_the_key(name):
    values, field = {**BAD_VALUES, **FAILED_BY_TEMPLATE}[name]
    result = template(values)
    assert result.returncode != 0, f"{name} was accepted"
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_helm_lint_refuses_bad_values_naming_the_key(name):
    values, field = BAD_VALUES[name]
    result = lint(values)
    assert result.returncode != 0, f"{name} was accepted"
    assert field in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(GOOD_VALUES))
def test_good_values_are_accepted(name):
    result = template(GOOD_VALUES[name])
    assert result.returncode == 0, result.stderr


def test_without_a_jwt_secret_the_error_says_how_to_make_one():
    result = template({"search": {"jwt": {"existingSecret": ""}}})
    assert result.returncode != 0
    for hint in ("create secret generic f1backfill-jwt",
                 "--from-literal=JWT_SECRET=$(openssl rand -hex 32)",
                 "search.jwt.jwksUrl", "search.enabled=false"):
        assert hint in result.stderr, hint


def test_the_schema_is_valid_draft_7_and_accepts_the_defaults():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(defaults)


def test_every_object_in_the_schema_refuses_unknown_keys():
    """A typo anywhere in the chart's own keys is an error, not a silently ignored value."""

    def walk(schema: dict, path: str) -> list[str]:
        loose = []
        if schema.get("type") == "object" and "properties" in schema:
            if schema.get("additionalProperties") is not False:
                loose.append(path)
            for key, sub in schema["properties"].items():
                loose += walk(sub, f"{path}/{key}")
        return loose

    assert walk(SCHEMA, "") == []
