"""RS256 / ES256 tokens verified with keys fetched over HTTP from a real JWKS endpoint on
127.0.0.1 (tests/support/tokens.py): caching, unknown kids, rotation, an endpoint that is
down, erring, slow or oversized. The endpoint (the `jwks_server` fixture, registered in
tests/conftest.py) counts the requests it gets."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from f1backfill.errors import Unauthorized
from f1backfill.frontdoor import auth
from f1backfill.frontdoor.auth import REFUSED, AuthSettings, Claims, TokenVerifier
from tests.support.clock import FakeClock
from tests.support.tokens import (
    JwksServer,
    bearer,
    ec_key,
    mint,
    random_ids,
    rsa_key,
    valid_claims,
)

INTERVAL = auth.JWKS_REFETCH_INTERVAL_SECONDS


@pytest.fixture(scope="module")
def rsa():
    return rsa_key("rsa-1")


def verifier_for(server: JwksServer, algorithm: str = "RS256", clock=None,
                 **settings) -> TokenVerifier:
    return TokenVerifier(
        AuthSettings(jwt_algorithm=algorithm, jwt_jwks_url=server.url, **settings),
        clock=clock or FakeClock())


def verify(verifier: TokenVerifier, token: str) -> Claims:
    return asyncio.run(verifier.verify(bearer(token)))


def refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(verifier, token)
    assert str(caught.value) == REFUSED


def test_rs256_and_es256_tokens_verify_with_keys_fetched_once(jwks_server, rsa):
    ec = ec_key("ec-1")
    jwks_server.publish(rsa, ec)
    for key in (rsa, ec):
        verifier = verifier_for(jwks_server, key.algorithm)
        for _ in range(3):
            ids = random_ids()
            claims = verify(verifier, mint(valid_claims(**ids), key))
            assert claims == Claims(role="captain", **ids)
    assert jwks_server.requests == 2  # one per verifier


def test_an_unknown_kid_is_refetched_once_and_a_flood_of_them_stays_bounded(jwks_server, rsa):
    jwks_server.publish(rsa)
    clock = FakeClock()
    verifier = verifier_for(jwks_server, clock=clock)
    verify(verifier, mint(valid_claims(), rsa))
    assert jwks_server.requests == 1
    clock.now += INTERVAL
    stranger = rsa_key("stranger")
    refused(verifier, mint(valid_claims(), stranger))
    assert jwks_server.requests == 2

    async def flood(count: int) -> list:
        tokens = [bearer(mint(valid_claims(), rsa, headers={"kid": f"kid-{i}"}))
                  for i in range(count)]
        return await asyncio.gather(*(verifier.verify(t) for t in tokens),
                                    return_exceptions=True)

    for _ in range(3):
        clock.now += INTERVAL
        results = asyncio.run(flood(300))
        assert {str(r) for r in results} == {REFUSED}
        assert all(isinstance(r, Unauthorized) for r in results)
    assert jwks_server.requests == 5  # one per interval, whatever the flood


def test_a_rotated_key_verifies_after_a_refetch_and_a_retired_one_stops_after_the_ttl(
        jwks_server, rsa):
    jwks_server.publish(rsa)
    clock = FakeClock()
    verifier = verifier_for(jwks_server, clock=clock, jwks_ttl_seconds=60)
    old_token = mint(valid_claims(), rsa)
    verify(verifier, old_token)
    new = rsa_key("rsa-2")
    jwks_server.publish(rsa, new)
    clock.now += INTERVAL
    assert verify(verifier, mint(valid_claims(), new))
    assert jwks_server.requests == 2
    jwks_server.publish(new)
    verify(verifier, old_token)  # still in the set fetched a moment ago
    clock.now += 60
    refused(verifier, old_token)
    assert verify(verifier, mint(valid_claims(), new))
    assert jwks_server.requests == 3


def test_an_endpoint_that_is_down_refuses_tokens_and_is_logged_once(jwks_server, rsa, caplog):
    caplog.set_level(logging.INFO, logger=auth.__name__)
    jwks_server.publish(rsa)
    url = jwks_server.url
    jwks_server.stop()  # connections to its port are now refused
    clock = FakeClock()
    verifier = TokenVerifier(AuthSettings(jwt_algorithm="RS256", jwt_jwks_url=url),
                             clock=clock)
    token = mint(valid_claims(), rsa)
    for _ in range(3):
        refused(verifier, token)
        clock.now += INTERVAL
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert url in warnings[0].getMessage()


@pytest.mark.parametrize(("status", "body"), [
    (503, b"unavailable"), (404, b"{}"), (200, b"<html>login</html>"), (200, b'{"keys": []}'),
    (200, b'{"keys": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    (200, b" " * (auth.MAX_JWKS_BYTES + 1)),
], ids=["503", "404", "html", "no-keys", "deeply-nested", "oversized"])
def test_an_endpoint_that_errs_refuses_tokens_then_recovers(jwks_server, rsa, status, body):
    jwks_server.publish(rsa)
    jwks_server.status, jwks_server.body = status, body
    clock = FakeClock()
    verifier = verifier_for(jwks_server, clock=clock)
    token = mint(valid_claims(), rsa)
    refused(verifier, token)
    refused(verifier, token)
    assert jwks_server.requests == 1
    jwks_server.status, jwks_server.body = 200, None
    clock.now += INTERVAL
    assert verify(verifier, token)
    assert jwks_server.requests == 2


def test_a_slow_endpoint_is_given_up_on_after_the_timeout(jwks_server, rsa, monkeypatch):
    monkeypatch.setattr(auth, "JWKS_FETCH_TIMEOUT_SECONDS", 0.3)
    jwks_server.publish(rsa)
    jwks_server.delay = 1.5
    verifier = verifier_for(jwks_server)
    started = time.monotonic()
    refused(verifier, mint(valid_claims(), rsa))
    # The refusal comes after the timeout; asyncio.run then waits for the fetching thread,
    # whose socket times out too (or the response arrives, late).
    assert time.monotonic() - started < 2.5
    assert jwks_server.requests == 1
