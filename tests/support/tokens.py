"""Bearer tokens for tests: keys, valid claims, minted and hand-made JWTs, and a real JWKS
endpoint on 127.0.0.1.

    from tests.support.tokens import jwks_server  # noqa: F401  (a fixture, found by name)

    key = rsa_key("k1")
    jwks_server.publish(key)
    token = mint(valid_claims(), key)           # RS256, header kid "k1"
    token = mint(valid_claims(), SECRET)        # HS256 with a shared secret
    token = hand_made({"alg": "none"}, valid_claims())   # no signature at all

Keys are generated with `cryptography`, so nothing secret is checked in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

# An HS256 secret of the length AuthSettings requires (32 bytes).
SECRET = "test-secret-of-thirty-two-bytes!"
assert len(SECRET.encode()) == 32

YACHT_ID = "0b8f5d1e-8f0e-4c1a-9c53-2f1d8a6b9e10"
USER_ID = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
ORG_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
ROLE = "captain"


@dataclass(frozen=True)
class SigningKey:
    """An asymmetric key pair with its kid: signs tokens, publishes its public JWK."""

    kid: str
    algorithm: str  # RS256 or ES256
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK, with kid, alg and use, as an issuer publishes it."""
        to_jwk = RSAAlgorithm.to_jwk if self.algorithm == "RS256" else ECAlgorithm.to_jwk
        jwk = json.loads(to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> SigningKey:
    """A fresh RSA key for RS256 (generating one takes a few tens of milliseconds)."""
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537,
                                                             key_size=bits))


def ec_key(kid: str = "ec-1") -> SigningKey:
    """A fresh P-256 key for ES256."""
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def jwk_set(*keys: SigningKey | dict[str, Any]) -> dict[str, Any]:
    """A JWK set of the public keys (a dict is taken as a JWK as it is)."""
    return {"keys": [k.public_jwk() if isinstance(k, SigningKey) else k for k in keys]}


def valid_claims(*, lifetime: float = 300.0, **overrides: Any) -> dict[str, Any]:
    """Claims that verify: the four identities, iat now, exp `lifetime` seconds from now.
    `overrides` replace or add claims; `without(claims, name)` drops one."""
    now = int(time.time())
    claims = {"yacht_id": YACHT_ID, "user_id": USER_ID, "org_id": ORG_ID, "role": ROLE,
              "sub": USER_ID, "iat": now, "exp": now + int(lifetime)}
    claims.update(overrides)
    return claims


def without(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in claims.items() if name not in names}


def random_ids() -> dict[str, str]:
    """Fresh yacht_id, user_id and org_id, for tests that need identities of their own."""
    return {name: str(uuid.uuid4()) for name in ("yacht_id", "user_id", "org_id")}


def mint(claims: dict[str, Any], key: SigningKey | str | bytes, *,
         algorithm: str | None = None, headers: dict[str, Any] | None = None) -> str:
    """A token signed with PyJWT: HS256 with a secret (str/bytes), or the key's own
    algorithm with its kid in the header. `algorithm` and `headers` override (kid too)."""
    if isinstance(key, SigningKey):
        return jwt.encode(claims, key.private_key, algorithm=algorithm or key.algorithm,
                          headers={"kid": key.kid, **(headers or {})})
    return jwt.encode(claims, key, algorithm=algorithm or "HS256", headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any],
              sign: Callable[[bytes], bytes] | None = None) -> str:
    """A token built without PyJWT's checks: base64url(header).base64url(claims).signature,
    the signature `sign(signing input)`, or empty when `sign` is None (`alg: none`)."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def hmac_signed(claims: dict[str, Any], secret: bytes,
                header: dict[str, Any] | None = None) -> str:
    """HS256 over any bytes as the secret, even a public key PEM (which PyJWT's encode
    refuses): the token of the RS256 -> HS256 key-confusion attack."""
    return hand_made(header or {"alg": "HS256", "typ": "JWT"}, claims,
                     lambda data: hmac.new(secret, data, hashlib.sha256).digest())


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- A JWKS endpoint -----------------------------------------------------------------------


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWK set the test controls.

    `publish(*keys)` replaces the set; `status` (default 200) and `body` (default: the set
    as JSON) change the answer, `delay` holds it back; `requests` counts the GETs of
    `url`. `stop()` takes the endpoint away: connections are then refused.
    """

    PATH = "/.well-known/jwks.json"

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self._requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll: stop() waits up to one for serve_forever to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="jwks-server", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.PATH}"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def publish(self, *keys: SigningKey | dict[str, Any]) -> None:
        self.jwks = jwk_set(*keys)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != server.PATH:
                    self.send_error(404)
                    return
                with server._lock:
                    server._requests += 1
                if server.delay:
                    time.sleep(server.delay)
                body = server.body if server.body is not None else json.dumps(
                    server.jwks).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures
                pass

        return Handler


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    """A JWKS endpoint of this test's own, serving an empty set until `publish`."""
    server = JwksServer()
    try:
        yield server
    finally:
        server.stop()
