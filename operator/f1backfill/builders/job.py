"""spec -> the embedding Job's manifest. Pure: no API client, no clock."""

from __future__ import annotations

from typing import Any

from ..admission import ObservedBackfill
from ..api import job_name
from ..config import OperatorSettings
from ..constants import (
    ANNOTATION_BACKFILL_UID,
    API_VERSION,
    CLOUDFLARE_API,
    KIND,
    LABEL_ADMISSION,
    LABEL_BACKFILL,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_YACHT_ID,
    MANAGED_BY,
    WORKER_APP_NAME,
)

WORKER_PORT = 8080


def rate_share(backfill: ObservedBackfill, settings: OperatorSettings) -> tuple[int, int]:
    """(requests/min, tokens/min) one Job may use: the account's whole budget, capped by the
    CR's own rateLimit. There is no split across the slots: the workers share the account's
    budget through one bucket in Postgres (worker/ratelimit.py, SharedBucket), so what one
    Job leaves unused goes to the others, and together they never exceed the account."""
    assert backfill.spec is not None
    limit = backfill.spec.rate_limit
    return (min(settings.fleet_requests_per_minute, limit.requests_per_minute),
            min(settings.fleet_tokens_per_minute, limit.tokens_per_minute))


def label_value(text: str) -> str:
    """A label value is at most 63 characters, alphanumeric at both ends."""
    return text[:63].rstrip("-_.")


def job_labels(backfill: ObservedBackfill, admission: int) -> dict[str, str]:
    assert backfill.spec is not None
    return {
        LABEL_BACKFILL: label_value(backfill.name),
        LABEL_YACHT_ID: backfill.spec.yacht_id,
        LABEL_ADMISSION: str(admission),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: WORKER_APP_NAME,
    }


def build_job(backfill: ObservedBackfill, admission: int,
              settings: OperatorSettings) -> dict[str, Any]:
    spec = backfill.spec
    assert spec is not None, "a backfill with an invalid spec is never admitted"
    name = job_name(backfill.namespace, backfill.name, backfill.uid, admission)
    labels = job_labels(backfill, admission)
    rpm, tpm = rate_share(backfill, settings)
    provider = spec.embedding.provider or settings.default_provider
    env: list[dict[str, Any]] = [
        {"name": "YACHT_ID", "value": spec.yacht_id},
        {"name": "EMBEDDING_PROVIDER", "value": str(provider)},
        {"name": "EMBEDDING_MODEL", "value": spec.embedding.model},
        {"name": "EMBEDDING_DIMENSIONS", "value": str(spec.embedding.dimensions)},
        {"name": "BATCH_SIZE", "value": str(spec.batch_size)},
        {"name": "BATCH_SLEEP_SEC", "value": str(spec.batch_sleep_seconds)},
        {"name": "MAX_EMBEDDING_CHARS", "value": str(spec.max_embedding_chars)},
        {"name": "SKIP_OBJECT_TYPES", "value": ",".join(spec.skip_object_types)},
        {"name": "MAX_ATTEMPTS", "value": str(spec.max_attempts)},
        {"name": "RATE_LIMIT_RPM", "value": str(rpm)},
        {"name": "RATE_LIMIT_TPM", "value": str(tpm)},
        # The account's limits, which the shared bucket holds: the same for every Job.
        {"name": "ACCOUNT_RATE_LIMIT_RPM", "value": str(settings.fleet_requests_per_minute)},
        {"name": "ACCOUNT_RATE_LIMIT_TPM", "value": str(settings.fleet_tokens_per_minute)},
        {"name": "PROMETHEUS_PORT", "value": str(WORKER_PORT)},
        {"name": "LOG_LEVEL", "value": settings.worker_log_level},
        {"name": "WORKER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # Credentials by reference only: never in the CR, the Job's command line or logs.
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
            "name": settings.database_secret_name, "key": settings.database_secret_key}}},
    ]
    if settings.redis_secret_name:
        # The search cache's Redis, whose yacht generation each batch bumps; the URL may
        # carry a password, so it is a reference too.
        env.append({"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {
            "name": settings.redis_secret_name, "key": settings.redis_secret_key}}})
    if (settings.redis_secret_name and settings.cloudflare_secret_name
            and settings.cloudflare_account_id and settings.cloudflare_kv_namespace_id):
        # The edge's KV, where each batch's bump is published too (docs/edge.md): only with
        # Redis, which counts the generations. The ids are not secret; the API token is, so
        # it is a reference like the others.
        env.append({"name": "CLOUDFLARE_ACCOUNT_ID", "value": settings.cloudflare_account_id})
        env.append({"name": "CLOUDFLARE_KV_NAMESPACE_ID",
                    "value": settings.cloudflare_kv_namespace_id})
        env.append({"name": "CLOUDFLARE_API_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": settings.cloudflare_secret_name, "key": settings.cloudflare_secret_key}}})
        if settings.cloudflare_api_base_url != CLOUDFLARE_API:
            env.append({"name": "CLOUDFLARE_API_BASE_URL",
                        "value": settings.cloudflare_api_base_url})
    if settings.openai_base_url:
        env.append({"name": "OPENAI_BASE_URL", "value": settings.openai_base_url})
    if provider == "openai":
        env.append({"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": settings.openai_secret_name, "key": settings.openai_secret_key}}})
    container = {
        "name": "worker",
        "image": settings.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": list(settings.worker_command),
        "env": env,
        "resources": spec.resource_requirements(),
        "ports": [{"name": "metrics", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            # 503 after 5 idle minutes with rows pending, an open breaker, or >10 failures
            # in a row; four misses in a row (2 minutes) restart the pod.
            "httpGet": {"path": "/health", "port": WORKER_PORT},
            "initialDelaySeconds": 30, "periodSeconds": 30, "failureThreshold": 4,
            "timeoutSeconds": 5,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The worker talks to Postgres and the provider, never to the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if settings.worker_service_account:
        pod_spec["serviceAccountName"] = settings.worker_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": backfill.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_BACKFILL_UID: backfill.uid},
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": backfill.name,
                "uid": backfill.uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": settings.job_active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
