"""The package's one failure vocabulary: every exception it raises on purpose lives here.

Two kinds matter to whoever catches them:

- `TransientError`: the same call may succeed later (a database restarting, an API server
  blip, a provider's 5xx or 429). Retry it with backoff; say so in one log line.
- `PermanentError`: retrying the same call fails the same way until a person acts (a bad
  setting, a schema not migrated, a request the provider refuses). Report it where a user
  looks (a condition, an exit code, a dead letter) and do not spin on it.

`ProviderError` carries the dead-letter code of a failed embeddings request; each of its
subclasses is also transient or permanent. `Cancelled` is neither: it is the worker's own
shutdown reaching a wait.
"""

from __future__ import annotations

from collections.abc import Mapping


class BackfillError(Exception):
    """Base of every error this package raises on purpose."""


class TransientError(BackfillError):
    """May succeed if tried again later."""


class PermanentError(BackfillError):
    """Fails the same way until a person acts; report it, do not retry in a loop."""


# --- Settings, schema, custom resources ---------------------------------------------------


class ConfigError(PermanentError):
    """A setting or argument is missing or invalid; the message names it."""


class MigrationError(PermanentError):
    """The database schema cannot be brought to the expected version."""


class SchemaMismatch(PermanentError):
    """The database schema does not match what the process was configured for."""


class SchemaNotReady(PermanentError):
    """A table the process needs does not exist: the database was never migrated."""


class SpecError(PermanentError, ValueError):
    """A value of a YachtBackfill is invalid; `field` is its path, e.g. `spec.resources`."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class InvalidQuery(PermanentError, ValueError):
    """A search query text that is refused: the message says why; nothing is stored."""


# --- Services the operator and the worker depend on -----------------------------------------


class DatabaseUnavailable(TransientError):
    """PostgreSQL cannot be reached or dropped the connection."""


class KubeUnavailable(TransientError):
    """The Kubernetes API server cannot be reached or answered 5xx / 429."""


class KubeRefused(PermanentError):
    """The Kubernetes API server refused a request for good (403, 422): RBAC, quota, a
    manifest it finds invalid. `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CacheUnavailable(TransientError):
    """Redis cannot be reached: the search is served uncached, a generation bump skipped."""


class Unauthorized(PermanentError):
    """A request's bearer token is missing, malformed, unverifiable or expired. The message
    is short and safe to return: it never says which check failed."""


class Forbidden(PermanentError):
    """The caller is who it says but may not do this: a role the search may not serve."""


class NotFound(PermanentError):
    """What a request names is not there, or not the caller's: a clicked object that is not
    a row of the caller's yacht, for one. Nothing is written."""


class EmbeddingMismatch(PermanentError):
    """A search would compare vectors of different models or lengths: the query is embedded
    with a provider, model or dimensions other than the yacht's rows were."""


class WatchFailed(TransientError):
    """A watch stream ended with an error event other than 410 Gone."""


class Cancelled(BackfillError):
    """A wait was abandoned because the worker is shutting down."""


# --- The embeddings provider -----------------------------------------------------------------


class ProviderError(BackfillError):
    """A failed embeddings request. `code` is the dead-letter error code of its rows."""

    code = "provider_error"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class RateLimited(ProviderError, TransientError):
    """429: wait as told and resend; never counts against a row."""

    code = "rate_limit"


class RequestTooLarge(ProviderError, PermanentError):
    """429 'Request too large': the request must be split; waiting will not help."""

    code = "rate_limit"


class QuotaExhausted(ProviderError, PermanentError):
    """429 insufficient_quota: billing, not pacing. Waiting will not help; it counts."""

    code = "rate_limit"


class InvalidInput(ProviderError, PermanentError):
    """400: something in the request is refused; bisect to find the row."""

    code = "invalid_input"


class AuthFailed(ProviderError, PermanentError):
    """401/403: no row is at fault and no retry helps; the worker stops."""

    code = "auth"


class ProviderUnavailable(ProviderError, TransientError):
    """5xx or a broken connection: retry with backoff; feeds the circuit breaker."""

    code = "provider_error"


class ProviderTimeout(ProviderUnavailable):
    code = "timeout"


class BadResponse(ProviderUnavailable):
    """A 200 that cannot be read (malformed JSON, missing vectors)."""

    code = "bad_response"
