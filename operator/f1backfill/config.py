"""Typed settings, read once at start from the environment (playbook names) and flags.

Every field is documented where it is declared; `from_env` validates them all and names
the offending variable in its error, so a bad Job spec fails at start, not mid-batch.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError

PROVIDERS = ("openai", "hash")


def _meta(env: str, doc: str, **extra: Any) -> dict:
    return {"env": env, "doc": doc, **extra}


@dataclass(frozen=True)
class WorkerSettings:
    """What one embedding worker (one Job, one yacht) needs."""

    yacht_id: str = field(
        default="", metadata=_meta("YACHT_ID", "the yacht whose queue is drained")
    )
    database_url: str = field(
        default="", metadata=_meta("DATABASE_URL", "PostgreSQL URL; from a Secret", secret=True)
    )
    provider: str = field(default="hash", metadata=_meta(
        "EMBEDDING_PROVIDER", "openai (any OpenAI-compatible API) or hash (offline)"))
    openai_api_key: str = field(
        default="", metadata=_meta("OPENAI_API_KEY", "API key; from a Secret", secret=True)
    )
    openai_base_url: str = field(default="", metadata=_meta(
        "OPENAI_BASE_URL", "OpenAI-compatible endpoint; empty = api.openai.com"))
    model: str = field(default="text-embedding-3-small", metadata=_meta(
        "EMBEDDING_MODEL", "embedding model name"))
    dimensions: int = field(default=1536, metadata=_meta(
        "EMBEDDING_DIMENSIONS", "vector length; must match search_index.embedding", lo=1, hi=16000))
    batch_size: int = field(default=100, metadata=_meta(
        "BATCH_SIZE", "rows claimed per batch", lo=1, hi=2048))
    batch_sleep_sec: float = field(default=0.1, metadata=_meta(
        "BATCH_SLEEP_SEC", "pause between a lane's batches", lo=0.0, hi=3600.0))
    max_embedding_chars: int = field(default=24000, metadata=_meta(
        "MAX_EMBEDDING_CHARS", "text is cut to this many characters", lo=1, hi=1_000_000))
    skip_object_types: tuple[str, ...] = field(default=(), metadata=_meta(
        "SKIP_OBJECT_TYPES", "comma-separated object types left pending"))
    max_attempts: int = field(default=5, metadata=_meta(
        "MAX_ATTEMPTS", "failures before a row is dead-lettered", lo=1, hi=100))
    requests_per_minute: int = field(default=3000, metadata=_meta(
        "RATE_LIMIT_RPM", "provider requests per minute this worker may use", lo=1))
    tokens_per_minute: int = field(default=1_000_000, metadata=_meta(
        "RATE_LIMIT_TPM", "provider tokens per minute this worker may use", lo=1))
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """Settings from `env` (default os.environ), then `overrides` (flags) win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(
                    f"{f.metadata['env']}={value} is out of range "
                    f"[{lo}, {'' if hi is None else hi}]"
                )
        if self.yacht_id:
            try:
                uuid.UUID(self.yacht_id)
            except ValueError:
                raise ConfigError(f"YACHT_ID is not a UUID: {self.yacht_id!r}") from None
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"EMBEDDING_PROVIDER must be one of {PROVIDERS}, got {self.provider!r}"
            )
        if self.provider == "openai" and not self.openai_api_key:
            raise ConfigError("OPENAI_API_KEY is required with EMBEDDING_PROVIDER=openai")

    def with_(self, **changes: Any) -> WorkerSettings:
        settings = replace(self, **changes)
        settings.validate()
        return settings

    def redacted(self) -> dict[str, Any]:
        """For logs: secrets reduced to whether they are set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("<set>" if value else "<unset>") if f.metadata.get("secret") else value
        return out


def _parse(f, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a valid {kind}") from None
    return raw
