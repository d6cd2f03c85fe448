"""f1backfill.builders.job: a backfill's spec -> its embedding Job's manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from f1backfill.admission import ObservedBackfill
from f1backfill.api import job_name
from f1backfill.builders.job import build_job, rate_share
from f1backfill.config import OperatorSettings, WorkerSettings
from f1backfill.constants import (
    API_VERSION,
    KIND,
    LABEL_BACKFILL,
    LABEL_MANAGED_BY,
    LABEL_YACHT_ID,
    MANAGED_BY,
)
from tests.support.backfills import backfill, settings, yacht_id

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def full_sample() -> ObservedBackfill:
    """manifests/samples/yachtbackfill-full.yaml: every field set."""
    body = yaml.safe_load((SAMPLES / "yachtbackfill-full.yaml").read_text())
    spec = dict(body["spec"])
    yacht = spec.pop("yachtId")
    return backfill(body["metadata"]["name"], "fleet", yacht=yacht, spec=spec)


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(job)["env"]}


def literal_env(job: dict[str, Any]) -> dict[str, str]:
    return {name: item["value"] for name, item in env(job).items() if "value" in item}


# --- Identity -----------------------------------------------------------------------------------


def test_the_job_is_a_batch_v1_job_in_the_backfills_namespace() -> None:
    b = backfill("lady-marina", "fleet-east")
    job = build_job(b, 3, settings())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["namespace"] == "fleet-east"


def test_the_name_is_deterministic_per_admission() -> None:
    b = backfill("lady-marina", "fleet")
    first = build_job(b, 1, settings())
    assert first["metadata"]["name"] == job_name("fleet", "lady-marina", b.uid, 1)
    assert build_job(b, 1, settings()) == first
    assert build_job(b, 2, settings())["metadata"]["name"] != first["metadata"]["name"]


def test_the_owner_reference_makes_the_backfill_its_controller() -> None:
    b = backfill("lady-marina", uid="6f1c2f7e-7b0e-4b7c-9b4d-1b2f3c4d5e6f")
    assert build_job(b, 1, settings())["metadata"]["ownerReferences"] == [{
        "apiVersion": API_VERSION, "kind": KIND, "name": "lady-marina",
        "uid": "6f1c2f7e-7b0e-4b7c-9b4d-1b2f3c4d5e6f",
        "controller": True, "blockOwnerDeletion": True}]


def test_the_labels_name_the_backfill_and_the_yacht() -> None:
    b = backfill("lady-marina", yacht=7)
    job = build_job(b, 1, settings())
    labels = job["metadata"]["labels"]
    assert labels[LABEL_BACKFILL] == "lady-marina"
    assert labels[LABEL_YACHT_ID] == yacht_id(7)
    assert labels[LABEL_MANAGED_BY] == MANAGED_BY
    assert job["spec"]["template"]["metadata"]["labels"] == labels


@pytest.mark.parametrize("name", [
    "a" * 253,
    "m.y.lady-marina." + "x" * 60,
    "lady-" + "marina-" * 8 + "-.-x",
])
def test_long_names_give_valid_labels_and_job_names(name: str) -> None:
    job = build_job(backfill(name), 12, settings())
    for key, value in job["metadata"]["labels"].items():
        assert len(value) <= 63, key
        assert LABEL_VALUE.match(value), (key, value)
    assert len(job["metadata"]["name"]) <= 63
    assert DNS_LABEL.match(job["metadata"]["name"])


# --- Pod ----------------------------------------------------------------------------------------


def test_resources_default_to_512mi_and_500m_with_requests_equal_to_limits() -> None:
    job = build_job(backfill(), 1, settings())
    assert container(job)["resources"] == {
        "requests": {"memory": "512Mi", "cpu": "500m"},
        "limits": {"memory": "512Mi", "cpu": "500m"}}


def test_resources_come_from_the_crs_override() -> None:
    assert container(build_job(full_sample(), 1, settings()))["resources"] == {
        "requests": {"memory": "384Mi", "cpu": "250m"},
        "limits": {"memory": "512Mi", "cpu": "1"}}
    limits_only = backfill(spec={"resources": {"limits": {"memory": "1Gi"}}})
    assert container(build_job(limits_only, 1, settings()))["resources"] == {
        "requests": {"memory": "1Gi", "cpu": "500m"},
        "limits": {"memory": "1Gi", "cpu": "500m"}}


def test_the_pod_never_restarts_in_place_and_mounts_no_token() -> None:
    pod = build_job(backfill(), 1, settings())["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    named = build_job(backfill(), 1, settings(worker_service_account="embedder"))
    assert named["spec"]["template"]["spec"]["serviceAccountName"] == "embedder"
    assert named["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = build_job(backfill(), 1, settings())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert "add" not in sc["capabilities"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and "volumes" not in pod


def test_the_worker_image_and_command_come_from_the_settings() -> None:
    s = settings(worker_image="registry.local/f1backfill:1.2.3",
                 worker_image_pull_policy="Always",
                 worker_command=("python", "-m", "f1backfill", "worker"))
    c = container(build_job(backfill(), 1, s))
    assert (c["image"], c["imagePullPolicy"]) == ("registry.local/f1backfill:1.2.3", "Always")
    assert c["command"] == ["python", "-m", "f1backfill", "worker"]
    assert "args" not in c


def test_job_limits_come_from_the_settings() -> None:
    s = settings(job_backoff_limit=4, job_active_deadline_seconds=7200, job_ttl_seconds=600)
    spec = build_job(backfill(), 1, s)["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"],
            spec["ttlSecondsAfterFinished"]) == (4, 7200, 600)
    defaults = build_job(backfill(), 1, settings())["spec"]
    assert (defaults["backoffLimit"], defaults["activeDeadlineSeconds"],
            defaults["ttlSecondsAfterFinished"]) == (2, 21600, 3600)


# --- Credentials --------------------------------------------------------------------------------


def test_database_url_comes_only_from_a_secret() -> None:
    s = settings(database_secret_name="db-creds", database_secret_key="url")
    item = env(build_job(backfill(), 1, s))["DATABASE_URL"]
    assert item == {"name": "DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "url"}}}


@pytest.mark.parametrize(("cr_provider", "default", "expected"), [
    ("openai", "hash", True), ("hash", "openai", False), (None, "openai", True),
    (None, "hash", False)])
def test_the_openai_key_is_passed_only_to_openai_workers_and_only_from_a_secret(
        cr_provider: str | None, default: str, expected: bool) -> None:
    spec = {"embedding": {"provider": cr_provider}} if cr_provider else {}
    s = settings(default_provider=default, openai_secret_name="openai",
                 openai_secret_key="key")
    job = build_job(backfill(spec=spec), 1, s)
    assert literal_env(job)["EMBEDDING_PROVIDER"] == (cr_provider or default)
    if expected:
        assert env(job)["OPENAI_API_KEY"] == {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "openai", "key": "key"}}}
    else:
        assert "OPENAI_API_KEY" not in env(job)


def test_the_redis_url_is_passed_only_from_a_secret_when_one_is_named() -> None:
    s = settings(redis_secret_name="search-cache", redis_secret_key="url")
    assert env(build_job(backfill(), 1, s))["REDIS_URL"] == {
        "name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "search-cache",
                                                            "key": "url"}}}
    # The default key is the variable's own name.
    assert env(build_job(backfill(), 1, settings(redis_secret_name="search-cache")))[
        "REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "search-cache",
                                                      "key": "REDIS_URL"}


def test_no_redis_url_without_a_secret_even_when_the_operator_has_one() -> None:
    # The operator's own REDIS_URL is for its own bumps; workers get one only by reference.
    s = settings(redis_url="redis://:cache-s3cret@redis:6379/0")
    job = build_job(backfill(), 1, s)
    assert "REDIS_URL" not in env(job)
    assert "cache-s3cret" not in json.dumps(job)


CLOUDFLARE = {"cloudflare_account_id": "0123456789abcdef0123456789abcdef",
              "cloudflare_kv_namespace_id": "fedcba9876543210fedcba9876543210",
              "cloudflare_api_token": "cf-s3cret", "redis_url": "redis://redis:6379/0"}


def test_the_edge_kv_settings_reach_workers_with_the_token_by_reference() -> None:
    s = settings(**CLOUDFLARE, cloudflare_secret_name="f1backfill-cloudflare")
    # Without Redis a worker has no generation to publish: no CLOUDFLARE_* (its settings
    # would refuse them).
    assert not [name for name in env(build_job(backfill(), 1, s))
                if name.startswith("CLOUDFLARE_")]
    s = settings(**CLOUDFLARE, cloudflare_secret_name="f1backfill-cloudflare",
                 redis_secret_name="f1backfill-redis")
    job = build_job(backfill(), 1, s)
    values = literal_env(job)
    assert values["CLOUDFLARE_ACCOUNT_ID"] == CLOUDFLARE["cloudflare_account_id"]
    assert values["CLOUDFLARE_KV_NAMESPACE_ID"] == CLOUDFLARE["cloudflare_kv_namespace_id"]
    assert env(job)["CLOUDFLARE_API_TOKEN"] == {
        "name": "CLOUDFLARE_API_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "f1backfill-cloudflare", "key": "CLOUDFLARE_API_TOKEN"}}}
    assert "CLOUDFLARE_API_BASE_URL" not in values  # Cloudflare's own, the default
    assert "cf-s3cret" not in json.dumps(job)
    fake = settings(**CLOUDFLARE, cloudflare_secret_name="cf", cloudflare_secret_key="token",
                    cloudflare_api_base_url="http://127.0.0.1:8787/client/v4",
                    redis_secret_name="f1backfill-redis")
    job = build_job(backfill(), 1, fake)
    assert literal_env(job)["CLOUDFLARE_API_BASE_URL"] == "http://127.0.0.1:8787/client/v4"
    assert env(job)["CLOUDFLARE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "cf", "key": "token"}


def test_no_edge_kv_settings_without_a_secret_for_the_token() -> None:
    # The operator's own token is for its own publishes; workers get one only by reference.
    job = build_job(backfill(), 1, settings(**CLOUDFLARE))
    assert not [name for name in env(job) if name.startswith("CLOUDFLARE_")]
    assert "cf-s3cret" not in json.dumps(job)


def test_no_credential_is_written_anywhere_in_the_manifest() -> None:
    s = OperatorSettings.from_env({
        "DATABASE_URL": "postgresql://f1:db-s3cret@postgres:5432/f1",
        "DEFAULT_EMBEDDING_PROVIDER": "openai",
        "OPENAI_BASE_URL": "https://llm.internal/v1",
        "REDIS_URL": "rediss://:cache-s3cret@redis:6380/0",
        "WORKER_REDIS_SECRET": "f1backfill-redis",
        "CLOUDFLARE_ACCOUNT_ID": CLOUDFLARE["cloudflare_account_id"],
        "CLOUDFLARE_KV_NAMESPACE_ID": CLOUDFLARE["cloudflare_kv_namespace_id"],
        "CLOUDFLARE_API_TOKEN": "cf-s3cret",
        "WORKER_CLOUDFLARE_SECRET": "f1backfill-cloudflare",
    })
    job = build_job(full_sample(), 1, s)
    text = json.dumps(job)
    assert "db-s3cret" not in text and "postgresql://" not in text
    assert "cache-s3cret" not in text and "rediss://" not in text
    assert "cf-s3cret" not in text
    for name in ("DATABASE_URL", "OPENAI_API_KEY", "REDIS_URL", "CLOUDFLARE_API_TOKEN"):
        assert set(env(job)[name]) == {"name", "valueFrom"}
        assert set(env(job)[name]["valueFrom"]) == {"secretKeyRef"}
    assert not any(k in " ".join(container(job)["command"]) for k in ("KEY", "URL", "://"))


# --- The worker's settings ----------------------------------------------------------------------


def test_the_env_carries_the_crs_settings_to_the_worker() -> None:
    b = full_sample()
    job = build_job(b, 1, settings(worker_log_level="DEBUG"))
    values = literal_env(job)
    assert values["YACHT_ID"] == "3cb468f5-738c-4e78-8202-363c8a8be863"
    assert values["SKIP_OBJECT_TYPES"] == "email,crew_document"
    assert values["LOG_LEVEL"] == "DEBUG"
    assert env(job)["WORKER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # What the worker reads from that environment is what the CR asked for.
    worker = WorkerSettings.from_env({**values, "DATABASE_URL": "postgresql://x",
                                      "OPENAI_API_KEY": "from-the-secret"})
    worker.validate()
    assert b.spec is not None
    assert (worker.yacht_id, worker.provider, worker.model, worker.dimensions) == (
        b.spec.yacht_id, "openai", "text-embedding-3-small", 1536)
    assert (worker.batch_size, worker.batch_sleep_sec, worker.max_embedding_chars,
            worker.max_attempts) == (256, 0.25, 16000, 3)
    assert worker.skip_object_types == ("email", "crew_document")
    assert (worker.requests_per_minute, worker.tokens_per_minute) == (1500, 500_000)
    assert worker.prometheus_port == container(job)["ports"][0]["containerPort"]


def test_the_env_of_a_default_spec_gives_the_workers_defaults() -> None:
    values = literal_env(build_job(backfill(), 1, settings()))
    worker = WorkerSettings.from_env({**values, "DATABASE_URL": "postgresql://x"})
    defaults = WorkerSettings()
    for name in ("provider", "model", "dimensions", "batch_size", "batch_sleep_sec",
                 "max_embedding_chars", "skip_object_types", "max_attempts",
                 "requests_per_minute", "tokens_per_minute"):
        assert getattr(worker, name) == getattr(defaults, name), name
    assert values["SKIP_OBJECT_TYPES"] == ""


# --- The rate share -----------------------------------------------------------------------------


def test_one_job_gets_the_whole_fleet_budget_capped_by_its_rate_limit() -> None:
    assert rate_share(backfill(), settings()) == (3000, 1_000_000)
    assert rate_share(full_sample(), settings()) == (1500, 500_000)


def test_there_is_no_static_split_across_the_slots() -> None:
    """Every Job may use the account's whole budget (capped by its CR); the workers share
    it through the account's bucket in Postgres, so a slot's unused budget is not lost."""
    s = settings(max_concurrent_jobs=3, fleet_requests_per_minute=3000,
                 fleet_tokens_per_minute=1_000_000)
    assert rate_share(backfill(), s) == (3000, 1_000_000)
    small = backfill(spec={"rateLimit": {"requestsPerMinute": 200, "tokensPerMinute": 900_000}})
    assert rate_share(small, s) == (200, 900_000)
    values = literal_env(build_job(small, 1, s))
    assert (values["RATE_LIMIT_RPM"], values["RATE_LIMIT_TPM"]) == ("200", "900000")
    # The account's limits, for its shared bucket: the same for every Job.
    assert (values["ACCOUNT_RATE_LIMIT_RPM"], values["ACCOUNT_RATE_LIMIT_TPM"]) == (
        "3000", "1000000")


@pytest.mark.parametrize("slots", [1, 2, 3, 7, 10, 64, 1000])
def test_no_job_is_given_more_than_the_account(slots: int) -> None:
    s = settings(max_concurrent_jobs=slots, fleet_requests_per_minute=3000,
                 fleet_tokens_per_minute=1_000_000)
    values = literal_env(build_job(backfill(), 1, s))
    worker = WorkerSettings.from_env({**values, "DATABASE_URL": "postgresql://x"})
    assert worker.requests_per_minute <= worker.account_requests_per_minute == 3000
    assert worker.tokens_per_minute <= worker.account_tokens_per_minute == 1_000_000
