"""Embedding providers: OpenAI (any OpenAI-compatible API) and an offline hash embedder.

A provider turns a list of texts into vectors or raises a `ProviderError` (errors.py); how to
react (wait, retry, bisect, dead-letter) is the embedder's business, not the provider's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..constants import Provider
from ..errors import (
    AuthFailed,
    BadResponse,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RequestTooLarge,
)


@dataclass
class EmbedResult:
    vectors: list[np.ndarray]
    tokens: int | None  # the provider's usage count; None when it reported none
    headers: Mapping[str, str] = field(default_factory=dict)


class EmbeddingProvider(Protocol):
    """What the embedder needs of a provider (`Provider` names which one to build)."""

    name: str

    def embed(self, texts: list[str]) -> EmbedResult: ...

    def close(self) -> None: ...


class HashProvider:
    """Deterministic, offline embeddings by feature hashing of words and word pairs.

    Texts sharing words get similar vectors, which is enough for the demo's search and for
    tests; L2-normalised like OpenAI's vectors.
    """

    name = Provider.HASH
    _WORD = re.compile(r"\w+")

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> EmbedResult:
        vectors = [self._one(text) for text in texts]
        tokens = sum(len(self._WORD.findall(text)) for text in texts)
        return EmbedResult(vectors=vectors, tokens=tokens)

    def _one(self, text: str) -> np.ndarray:
        words = self._WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        vector = np.zeros(self.dimensions, dtype=np.float32)
        if not features:
            vector[0] = 1.0
            return vector
        digests = np.frombuffer(
            b"".join(hashlib.blake2b(f.encode(), digest_size=8).digest() for f in features),
            dtype=np.uint64,
        )
        index = (digests % np.uint64(self.dimensions)).astype(np.int64)
        sign = np.where((digests >> np.uint64(63)) == 1, -1.0, 1.0).astype(np.float32)
        np.add.at(vector, index, sign)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm

    def close(self) -> None:
        pass


class OpenAIProvider:
    """The official SDK; OPENAI_BASE_URL points it at any OpenAI-compatible server.

    Importing the SDK is most of a worker's start (0.45 s of 0.65 s of imports, quiet
    machine): it is imported, and the client made, in a thread of its own, while the worker
    connects to the database and queues and claims its rows, which mostly wait on
    PostgreSQL; the first request waits for it (docs/benchmarks.md, the gap between Jobs).
    """

    name = Provider.OPENAI

    def __init__(
        self, *, api_key: str, base_url: str | None, model: str, dimensions: int, timeout: float
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self._openai = None
        self._client = None
        self._failed: BaseException | None = None
        self._made = threading.Thread(
            target=self._make, args=(api_key, base_url, timeout), name="openai-client",
            daemon=True)
        self._made.start()

    def _make(self, api_key: str, base_url: str | None, timeout: float) -> None:
        try:
            import openai

            # The SDK's own retries are off: a retry hidden inside the SDK would skip our
            # rate limiter's accounting and the circuit breaker, and hide 429 headers from us.
            self._client = openai.OpenAI(
                api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0
            )
            self._openai = openai
        except BaseException as exc:  # raised again to whoever needs the client
            self._failed = exc

    def _ready(self):
        """The SDK and its client, once made; what failed to make them raises here."""
        self._made.join()
        if self._failed is not None:
            raise self._failed
        return self._openai, self._client

    def embed(self, texts: list[str]) -> EmbedResult:
        openai, client = self._ready()
        extra = {"dimensions": self.dimensions} if self.model.startswith("text-embedding-3") else {}
        try:
            raw = client.embeddings.with_raw_response.create(
                input=texts, model=self.model, encoding_format="base64", **extra
            )
        except openai.APITimeoutError as exc:
            raise ProviderTimeout("request timed out") from exc
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__ or exc).__name__
            raise ProviderUnavailable(f"connection failed: {cause}") from exc
        except openai.RateLimitError as exc:
            raise _rate_limit_error(exc) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise AuthFailed(f"{exc.status_code}: {_message(exc)}", exc.response.headers) from exc
        except openai.BadRequestError as exc:
            raise InvalidInput(_message(exc), exc.response.headers) from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 408:
                raise ProviderTimeout(f"408: {_message(exc)}", exc.response.headers) from exc
            if exc.status_code in (404, 422) or 400 <= exc.status_code < 500:
                raise InvalidInput(f"{exc.status_code}: {_message(exc)}") from exc
            raise ProviderUnavailable(f"{exc.status_code}: {_message(exc)}",
                                      exc.response.headers) from exc
        except openai.APIResponseValidationError as exc:
            raise BadResponse(f"unreadable response: {exc}") from exc
        return _read(raw, len(texts))

    def close(self) -> None:
        self._made.join()
        if self._client is not None:
            self._client.close()


def _read(raw, inputs: int) -> EmbedResult:
    """A 200's vectors in input order and its usage; BadResponse when it cannot be read or
    does not hold one vector per input."""
    headers = raw.headers
    try:
        parsed = raw.parse()
        data = sorted(parsed.data, key=lambda item: item.index)
        vectors = [_as_vector(item.embedding) for item in data]
        tokens = parsed.usage.prompt_tokens if parsed.usage else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadResponse(f"unreadable response: {type(exc).__name__}: {exc}", headers) from exc
    if len(vectors) != inputs:
        raise BadResponse(f"{len(vectors)} vectors for {inputs} inputs", headers)
    return EmbedResult(vectors=vectors, tokens=tokens, headers=headers)


def _as_vector(embedding: object) -> np.ndarray:
    if isinstance(embedding, str):  # base64 the SDK left undecoded
        import base64

        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
    return str(exc)[:500]


def _rate_limit_error(exc) -> ProviderError:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    code = inner.get("code") if isinstance(inner, dict) else None
    kind = inner.get("type") if isinstance(inner, dict) else None
    message = _message(exc)
    headers = exc.response.headers
    if code == "insufficient_quota" or kind == "insufficient_quota":
        return QuotaExhausted(message, headers)
    if message.lower().startswith("request too large"):
        return RequestTooLarge(message, headers)
    return RateLimited(message, headers)


def build_provider(settings) -> EmbeddingProvider:
    match Provider(settings.provider):
        case Provider.OPENAI:
            return OpenAIProvider(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or None,
                model=settings.model,
                dimensions=settings.dimensions,
                timeout=settings.request_timeout_sec,
            )
        case Provider.HASH:
            return HashProvider(settings.dimensions)
