"""Bearer tokens: verify the JWT before trusting any claim in it.

`TokenVerifier.verify(header)` turns an `Authorization` header into `Claims` (the yacht,
user, organisation and role the request acts for) or raises `Unauthorized`, always with
the same short message: a client learns that its token was refused, never which check
refused it (the reason is logged at DEBUG).

What is checked, in order:

1. the header is `Bearer <compact JWS>` (scheme case-insensitive, at most
   `MAX_AUTHORIZATION_CHARS`);
2. the token's `alg` header equals `JWT_ALGORITHM`. The algorithm comes from configuration
   only (RFC 8725 §2.1, §3.1): `none`, an HS256 token "signed" with the RSA public key as
   its HMAC secret, or any other algorithm than the configured one is refused before a key
   is even looked up;
3. the signature, with the one key the configuration allows: `JWT_SECRET` for HS256; for
   RS256 / ES256 the key of the token's `kid` in the JWK set at `JWT_JWKS_URL`. Nothing
   in the token chooses where keys come from (`jku`, `x5u` and `jwk` headers are ignored);
4. `exp` (required) and `nbf`, with `leeway_seconds` of tolerance for clock skew; `aud`
   and `iss` when `JWT_AUDIENCE` / `JWT_ISSUER` are set (then the token must carry them);
5. the claims `yacht_id`, `user_id`, `org_id` (UUIDs, returned lowercase as PostgreSQL
   prints them) and `role` (a non-empty string).

The JWK set is fetched off the event loop with a short timeout and kept for
`jwks_ttl_seconds`. A `kid` it does not hold triggers one refetch (a key rotation), but
fetch attempts are at least `JWKS_REFETCH_INTERVAL_SECONDS` apart, however many unknown
kids arrive. While the endpoint cannot be fetched, tokens that need a fresh key set are
refused (401, not 500) and the outage is logged once, with a line when it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import jwt
from jwt.utils import is_pem_format, is_ssh_key

from ..defaults import JWT_LEEWAY_SECONDS
from ..errors import ConfigError, Unauthorized

log = logging.getLogger(__name__)

# The one message of every refusal: safe to return to a client as it is.
REFUSED = "invalid or expired token"

ALGORITHMS = ("HS256", "RS256", "ES256")
# The JWK key type (and curve) each asymmetric algorithm verifies with.
_KEY_TYPES = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32

# Far above any real token (ours carry four short claims), far below what it would cost to
# parse: a longer header is refused before it is split or decoded.
MAX_AUTHORIZATION_CHARS = 8192
# A JWK set is a few kilobytes; a response larger than this is not one.
MAX_JWKS_BYTES = 1 << 20
# One fetch of the JWK set, connection and body together. Short: a request waits for it.
JWKS_FETCH_TIMEOUT_SECONDS = 3.0
# Fetch attempts are at least this far apart, whatever triggers them (an unknown kid, an
# expired set, a failed fetch): a flood of made-up kids costs the JWKS endpoint at most one
# request per interval. Short enough that a freshly rotated key is picked up within it.
JWKS_REFETCH_INTERVAL_SECONDS = 10.0

# Compact JWS: three base64url segments, the signature not empty (an `alg: none` token's
# empty signature is refused here already; its header is refused below in any case).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
UUID_CLAIMS = ("yacht_id", "user_id", "org_id")

Clock = Callable[[], float]
# (url, timeout in seconds) -> the response body; raises on any failure.
JwksFetch = Callable[[str, float], Awaitable[bytes]]


def _meta(env: str, doc: str, **extra: Any) -> dict[str, Any]:
    # The shape of f1backfill.config's field metadata, so that settings there can mirror
    # these fields (env name, doc, secret, bounds) and read them the same way.
    return {"env": env, "doc": doc, **extra}


@dataclass(frozen=True)
class AuthSettings:
    """How bearer tokens are verified. `validate()` refuses a configuration that cannot
    verify anything, naming the variable, so a bad one fails at start, not per request."""

    jwt_algorithm: str = field(default="HS256", metadata=_meta(
        "JWT_ALGORITHM", "HS256 (JWT_SECRET) or RS256 / ES256 (JWT_JWKS_URL); tokens with "
        "any other alg header are refused"))
    jwt_secret: str = field(default="", repr=False, metadata=_meta(
        "JWT_SECRET", "HS256 shared secret, at least 32 bytes; from a Secret", secret=True))
    jwt_jwks_url: str = field(default="", metadata=_meta(
        "JWT_JWKS_URL", "http(s) URL of the issuer's JWK set, for RS256 / ES256"))
    jwt_audience: str = field(default="", metadata=_meta(
        "JWT_AUDIENCE", "when set, tokens must carry this aud; empty = aud not checked"))
    jwt_issuer: str = field(default="", metadata=_meta(
        "JWT_ISSUER", "when set, tokens must carry this iss; empty = iss not checked"))
    leeway_seconds: float = field(default=JWT_LEEWAY_SECONDS.default, metadata=_meta(
        "JWT_LEEWAY_SECONDS", "clock skew tolerated on exp and nbf",
        lo=JWT_LEEWAY_SECONDS.minimum, hi=JWT_LEEWAY_SECONDS.maximum))
    jwks_ttl_seconds: float = field(default=300.0, metadata=_meta(
        "JWT_JWKS_TTL_SECONDS", "how long a fetched JWK set is used before it is refetched",
        lo=JWKS_REFETCH_INTERVAL_SECONDS, hi=86400.0))

    def validate(self) -> None:
        """Raise `ConfigError` naming the variable if these settings are inconsistent."""
        for f in fields(self):
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            value = getattr(self, f.name)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"{f.metadata['env']}={value} is out of range [{lo}, {hi}]")
        if self.jwt_algorithm not in ALGORITHMS:
            raise ConfigError(f"JWT_ALGORITHM must be one of {ALGORITHMS}, "
                              f"got {self.jwt_algorithm!r}")
        if self.jwt_algorithm == "HS256":
            self._validate_secret()
        else:
            self._validate_jwks_url()

    def _validate_secret(self) -> None:
        if self.jwt_jwks_url:
            raise ConfigError("JWT_JWKS_URL is set but JWT_ALGORITHM=HS256 verifies with "
                              "JWT_SECRET: unset one, or set JWT_ALGORITHM=RS256 or ES256")
        if not self.jwt_secret:
            raise ConfigError("JWT_SECRET is required with JWT_ALGORITHM=HS256")
        secret = self.jwt_secret.encode()
        if is_pem_format(secret) or is_ssh_key(secret):
            # The confusion attack's key: a public key is no secret. PyJWT would refuse it
            # on every request; refuse it once, here.
            raise ConfigError("JWT_SECRET is a public or private key, not a shared secret: "
                              "for keys use JWT_ALGORITHM=RS256 or ES256 with JWT_JWKS_URL")
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                              "with JWT_ALGORITHM=HS256")

    def _validate_jwks_url(self) -> None:
        if self.jwt_secret:
            raise ConfigError(f"JWT_SECRET is set but JWT_ALGORITHM={self.jwt_algorithm} "
                              "verifies with the keys at JWT_JWKS_URL: unset JWT_SECRET, "
                              "or set JWT_ALGORITHM=HS256")
        if not self.jwt_jwks_url:
            raise ConfigError(f"JWT_JWKS_URL is required with "
                              f"JWT_ALGORITHM={self.jwt_algorithm}")
        url = urllib.parse.urlsplit(self.jwt_jwks_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"JWT_JWKS_URL must be an http(s) URL, "
                              f"got {self.jwt_jwks_url!r}")


@dataclass(frozen=True)
class Claims:
    """Who a verified token acts for: the only identity an endpoint may use."""

    yacht_id: str  # UUID, lowercase
    user_id: str  # UUID, lowercase
    org_id: str  # UUID, lowercase
    role: str


class _Refused(Exception):
    """Internal: why a token was refused. Logged at DEBUG, never shown to the client."""


class TokenVerifier:
    """Verifies bearer tokens against one `AuthSettings`.

    One verifier per process (the app's lifespan): it holds the cached JWK set. `clock`
    (monotonic seconds) times that cache; `fetch_jwks` replaces the HTTP GET of the set
    (tests). Raises `ConfigError` if the settings do not validate.
    """

    def __init__(self, settings: AuthSettings, *, clock: Clock = time.monotonic,
                 fetch_jwks: JwksFetch | None = None) -> None:
        settings.validate()
        self._settings = settings
        self._algorithm = settings.jwt_algorithm
        self._secret = settings.jwt_secret.encode()
        self._jwks = None if self._algorithm == "HS256" else _JwksCache(
            settings.jwt_jwks_url, self._algorithm, settings.jwks_ttl_seconds, clock,
            fetch_jwks or fetch_url)
        required = ["exp"]
        required += ["aud"] if settings.jwt_audience else []
        required += ["iss"] if settings.jwt_issuer else []
        self._options: dict[str, Any] = {
            "require": required,
            # Unset JWT_AUDIENCE means aud is not checked; PyJWT would otherwise refuse
            # every token that carries one.
            "verify_aud": bool(settings.jwt_audience),
            "enforce_minimum_key_length": True,
        }

    async def verify(self, authorization_header: str | None) -> Claims:
        """The claims of a valid `Bearer <JWT>` header; `Unauthorized(REFUSED)` otherwise.

        No other exception escapes: an unreachable JWKS endpoint is a refusal too.
        """
        try:
            token = _bearer_token(authorization_header)
            header = _header(token, self._algorithm)
            key = self._secret if self._jwks is None else await self._jwks.key(header)
            return _claims(self._decode(token, key))
        except _Refused as refused:
            log.debug("bearer token refused: %s", refused)
        except Exception:
            # A bug or a PyJWT surprise must still fail closed, and be seen.
            log.warning("bearer token refused: unexpected error verifying it", exc_info=True)
        raise Unauthorized(REFUSED)

    def _decode(self, token: str, key: Any) -> Mapping[str, Any]:
        settings = self._settings
        try:
            return jwt.decode(
                token, key, algorithms=[self._algorithm], options=self._options,
                audience=settings.jwt_audience or None, issuer=settings.jwt_issuer or None,
                leeway=settings.leeway_seconds)
        except jwt.PyJWTError as error:
            raise _Refused(f"{type(error).__name__}: {error}") from None


def _bearer_token(value: str | None) -> str:
    if value is None:
        raise _Refused("no Authorization header")
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise _Refused(f"Authorization header longer than {MAX_AUTHORIZATION_CHARS}")
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise _Refused("Authorization header is not 'Bearer <token>'")
    if not _COMPACT_JWS.fullmatch(parts[1]):
        raise _Refused("bearer token is not a signed compact JWT")
    return parts[1]


def _header(token: str, algorithm: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise _Refused(f"unreadable header: {error}") from None
    if header.get("alg") != algorithm:
        raise _Refused(f"alg {header.get('alg')!r} is not the configured {algorithm}")
    return header


def _claims(payload: Mapping[str, Any]) -> Claims:
    values = {}
    for name in UUID_CLAIMS:
        value = payload.get(name)
        if not isinstance(value, str) or not _UUID.fullmatch(value):
            raise _Refused(f"claim {name} is missing or not a UUID")
        values[name] = value.lower()
    role = payload.get("role")
    if not isinstance(role, str) or not role.strip():
        raise _Refused("claim role is missing or empty")
    return Claims(role=role, **values)


# --- The JWK set ------------------------------------------------------------------------


class _JwksCache:
    """The JWK set at one URL: the keys of one algorithm by kid, refetched after `ttl`
    seconds or for an unknown kid, with fetch attempts at least
    JWKS_REFETCH_INTERVAL_SECONDS apart."""

    def __init__(self, url: str, algorithm: str, ttl: float, clock: Clock,
                 fetch: JwksFetch) -> None:
        self._url = url
        self._algorithm = algorithm
        self._ttl = ttl
        self._clock = clock
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started
        self._refresh: asyncio.Future[None] | None = None  # the fetch under way, if any
        self._down = False  # the last fetch failed (the outage is logged once)

    async def key(self, header: Mapping[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _Refused("no kid in the token's header")
        key = self._fresh_key(kid)
        if key is None:
            await self._refetch()
            key = self._fresh_key(kid)
        if key is None:
            raise _Refused(f"kid {kid[:64]!r} is not in a fresh JWK set")
        return key

    def _fresh_key(self, kid: str) -> jwt.PyJWK | None:
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
            return None
        return self._keys.get(kid)

    async def _refetch(self) -> None:
        """Join the fetch under way, or start one unless the last began too recently."""
        if self._refresh is None:
            now = self._clock()
            if (self._attempted_at is not None
                    and now - self._attempted_at < JWKS_REFETCH_INTERVAL_SECONDS):
                return
            self._attempted_at = now
            self._refresh = asyncio.ensure_future(self._fetch_and_store())
        # Shielded: a client that hangs up mid-fetch does not cancel it for the others,
        # and its result is kept.
        await asyncio.shield(self._refresh)

    async def _fetch_and_store(self) -> None:
        try:
            body = await asyncio.wait_for(
                self._fetch(self._url, JWKS_FETCH_TIMEOUT_SECONDS), JWKS_FETCH_TIMEOUT_SECONDS)
            keys = parse_jwks(body, self._algorithm)
        except Exception as error:
            reason = str(error) or type(error).__name__
            if not self._down:
                log.warning("JWKS %s cannot be used (%s): bearer tokens that need a fresh "
                            "key set are refused until it can", self._url, reason)
            else:
                log.debug("JWKS %s still cannot be used: %s", self._url, reason)
            self._down = True
        else:
            if self._down:
                log.info("JWKS %s usable again: %d key(s)", self._url, len(keys))
            self._down = False
            self._keys, self._fetched_at = keys, self._clock()
        finally:
            self._refresh = None


def parse_jwks(body: bytes, algorithm: str) -> dict[str, jwt.PyJWK]:
    """The public keys of `algorithm` in a JWK set, by kid. Keys of other types, curves or
    algorithms, for encryption, without a kid, or carrying private parts are left out.
    Raises ValueError if `body` is not a JWK set or holds no such key."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the response is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the response is not a JWK set")
    kty, crv = _KEY_TYPES[algorithm]
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in document["keys"]:
        if not (isinstance(jwk, dict) and jwk.get("kty") == kty
                and jwk.get("crv") == crv and jwk.get("use", "sig") == "sig"
                and jwk.get("alg", algorithm) == algorithm and "d" not in jwk):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            keys[kid] = jwt.PyJWK(jwk, algorithm)
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            log.debug("JWKS key %r left out: %s", kid, error)
    if not keys:
        raise ValueError(f"the JWK set holds no usable {algorithm} key with a kid")
    return keys


async def fetch_url(url: str, timeout: float) -> bytes:
    """GET `url` in a worker thread, so the event loop never blocks on it."""
    return await asyncio.to_thread(_get, url, timeout)


def _get(url: str, timeout: float) -> bytes:
    # The standard library, not an HTTP client package: the product declares none, and a
    # fetch every few minutes does not need one. The deadline bounds the whole response,
    # not only each read, so a server that trickles bytes cannot hold the thread.
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the response open
        raise OSError(f"HTTP {error.code} {error.reason}") from None
    with response:
        body = bytearray()
        while chunk := response.read1(65536):
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"the response is larger than {MAX_JWKS_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the response took longer than {timeout} s")
    return bytes(body)
