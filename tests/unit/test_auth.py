"""Bearer token verification: what passes, everything that is refused (always with the
same message), the settings that cannot work, and the JWK set's cache with an in-memory
endpoint (tests/integration/test_auth_jwks.py runs it against a real one)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import fields, replace

import pytest
from jwt.algorithms import RSAAlgorithm

from f1backfill.errors import ConfigError, Unauthorized
from f1backfill.frontdoor import auth
from f1backfill.frontdoor.auth import (
    REFUSED,
    AuthSettings,
    Claims,
    TokenVerifier,
    parse_jwks,
)
from tests.support.clock import FakeClock
from tests.support.tokens import (
    ORG_ID,
    ROLE,
    SECRET,
    USER_ID,
    YACHT_ID,
    bearer,
    ec_key,
    hand_made,
    hmac_signed,
    jwk_set,
    mint,
    rsa_key,
    valid_claims,
    without,
)

URL = "https://issuer.example/.well-known/jwks.json"
EXPECTED = Claims(yacht_id=YACHT_ID, user_id=USER_ID, org_id=ORG_ID, role=ROLE)
HS256 = AuthSettings(jwt_secret=SECRET)


@pytest.fixture(scope="module")
def rsa():
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def ec():
    return ec_key("ec-1")


class FakeJwks:
    """The JWKS endpoint in memory: serves `jwks` (or raises `error`), counts fetches."""

    def __init__(self, *keys) -> None:
        self.jwks = jwk_set(*keys)
        self.error: Exception | None = None
        self.hang = False
        self.fetches = 0

    async def __call__(self, url: str, timeout: float) -> bytes:
        self.fetches += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        return json.dumps(self.jwks).encode()


def verify(verifier: TokenVerifier, header: str | None) -> Claims:
    return asyncio.run(verifier.verify(header))


def refused(verifier: TokenVerifier, header: str | None) -> None:
    """The header is refused with Unauthorized and the one generic message."""
    with pytest.raises(Unauthorized) as caught:
        verify(verifier, header)
    assert str(caught.value) == REFUSED


def jwks_verifier(*keys, algorithm: str = "RS256", clock=None, **settings):
    endpoint = FakeJwks(*keys)
    verifier = TokenVerifier(
        AuthSettings(jwt_algorithm=algorithm, jwt_jwks_url=URL, **settings),
        clock=clock or FakeClock(), fetch_jwks=endpoint)
    return verifier, endpoint


# --- Settings --------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    AuthSettings(jwt_secret=SECRET),
    AuthSettings(jwt_algorithm="RS256", jwt_jwks_url=URL),
    AuthSettings(jwt_algorithm="ES256", jwt_jwks_url="http://jwks.auth.svc:8080/keys",
                 jwt_audience="f1", jwt_issuer="https://issuer.example/", leeway_seconds=0,
                 jwks_ttl_seconds=3600),
], ids=["HS256", "RS256", "ES256"])
def test_consistent_settings_validate(settings):
    settings.validate()


@pytest.mark.parametrize(("settings", "named"), [
    (dict(jwt_algorithm="none"), "JWT_ALGORITHM"),
    (dict(jwt_algorithm="hs256", jwt_secret=SECRET), "JWT_ALGORITHM"),
    (dict(jwt_algorithm="RS512", jwt_jwks_url=URL), "JWT_ALGORITHM"),
    (dict(jwt_algorithm="HS256"), "JWT_SECRET"),
    (dict(jwt_secret="too-short"), "JWT_SECRET"),
    (dict(jwt_secret=rsa_key("pem").public_pem().decode()), "JWT_SECRET"),
    (dict(jwt_secret=SECRET, jwt_jwks_url=URL), "JWT_JWKS_URL"),
    (dict(jwt_algorithm="RS256"), "JWT_JWKS_URL"),
    (dict(jwt_algorithm="ES256", jwt_jwks_url=URL, jwt_secret=SECRET), "JWT_SECRET"),
    (dict(jwt_algorithm="RS256", jwt_jwks_url="file:///etc/jwks.json"), "JWT_JWKS_URL"),
    (dict(jwt_algorithm="RS256", jwt_jwks_url="https:///no-host"), "JWT_JWKS_URL"),
    (dict(jwt_secret=SECRET, leeway_seconds=-1), "JWT_LEEWAY_SECONDS"),
    (dict(jwt_secret=SECRET, leeway_seconds=3600), "JWT_LEEWAY_SECONDS"),
    (dict(jwt_secret=SECRET, jwks_ttl_seconds=0), "JWT_JWKS_TTL_SECONDS"),
])
def test_inconsistent_settings_are_refused_naming_the_variable(settings, named):
    with pytest.raises(ConfigError, match=named):
        AuthSettings(**settings).validate()
    with pytest.raises(ConfigError, match=named):
        TokenVerifier(AuthSettings(**settings))


def test_the_secret_is_not_in_the_settings_repr_and_is_marked_secret():
    assert SECRET not in repr(HS256)
    (secret,) = [f for f in fields(AuthSettings) if f.metadata.get("secret")]
    assert secret.name == "jwt_secret"


def test_every_setting_names_its_variable_and_says_what_it_is():
    for f in fields(AuthSettings):
        assert f.metadata["env"].startswith("JWT_") and f.metadata["doc"], f.name


# --- What passes ------------------------------------------------------------------------


def test_a_valid_hs256_token_yields_its_claims():
    assert verify(TokenVerifier(HS256), bearer(mint(valid_claims(), SECRET))) == EXPECTED


def test_valid_rs256_and_es256_tokens_yield_their_claims(rsa, ec):
    for key in (rsa, ec):
        verifier, _ = jwks_verifier(key, algorithm=key.algorithm)
        assert verify(verifier, bearer(mint(valid_claims(), key))) == EXPECTED


def test_uuids_are_returned_lowercase_as_the_database_prints_them():
    token = mint(valid_claims(yacht_id=YACHT_ID.upper(), user_id=USER_ID.upper(),
                              org_id=ORG_ID.upper()), SECRET)
    assert verify(TokenVerifier(HS256), bearer(token)) == EXPECTED


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_case_insensitive_and_spaces_around_are_ignored(scheme):
    token = mint(valid_claims(), SECRET)
    assert verify(TokenVerifier(HS256), f"  {scheme}   {token} ") == EXPECTED


def test_aud_and_iss_pass_when_they_match_the_configured_ones():
    verifier = TokenVerifier(replace(HS256, jwt_audience="f1", jwt_issuer="https://idp/"))
    for aud in ("f1", ["other", "f1"]):
        token = mint(valid_claims(aud=aud, iss="https://idp/"), SECRET)
        assert verify(verifier, bearer(token)) == EXPECTED


def test_aud_and_iss_are_not_checked_when_not_configured():
    token = mint(valid_claims(aud="someone-else", iss="anyone"), SECRET)
    assert verify(TokenVerifier(HS256), bearer(token)) == EXPECTED


# --- Signatures and algorithms ------------------------------------------------------------


def test_a_token_signed_with_another_secret_is_refused():
    refused(TokenVerifier(HS256), bearer(mint(valid_claims(), SECRET[::-1])))


def test_a_token_whose_claims_were_changed_after_signing_is_refused():
    header, _, signature = mint(valid_claims(), SECRET).split(".")
    forged = hand_made({}, valid_claims(role="admiral")).split(".")[1]
    refused(TokenVerifier(HS256), bearer(f"{header}.{forged}.{signature}"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused_with_or_without_a_signature(alg, rsa):
    unsigned = hand_made({"alg": alg, "typ": "JWT"}, valid_claims())
    assert unsigned.endswith(".")
    with_signature = hand_made({"alg": alg, "kid": rsa.kid}, valid_claims(), lambda _: b"x")
    for verifier in (TokenVerifier(HS256), jwks_verifier(rsa)[0]):
        refused(verifier, bearer(unsigned))
        refused(verifier, bearer(with_signature))


def test_hs256_signed_with_the_rsa_public_key_is_refused_when_configured_for_rs256(rsa):
    # The classic confusion: the public key (which anyone can fetch) used as HMAC secret.
    verifier, _ = jwks_verifier(rsa)
    assert verify(verifier, bearer(mint(valid_claims(), rsa))) == EXPECTED  # the key works
    for pem in (rsa.public_pem(), rsa.public_pem().strip()):
        for header in ({"alg": "HS256", "kid": rsa.kid}, {"alg": "RS256", "kid": rsa.kid}):
            refused(verifier, bearer(hmac_signed(valid_claims(), pem, header)))


# Minting with a deliberately weak key or a longer hash warns; the point is that it fails.
WEAK_KEY = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@WEAK_KEY
def test_a_header_alg_other_than_the_configured_one_is_refused(rsa, ec):
    rs256, _ = jwks_verifier(rsa, ec)
    es256, _ = jwks_verifier(rsa, ec, algorithm="ES256")
    refused(rs256, bearer(mint(valid_claims(), rsa, algorithm="RS512")))
    refused(rs256, bearer(mint(valid_claims(), rsa, algorithm="PS256")))
    refused(rs256, bearer(mint(valid_claims(), ec)))
    refused(es256, bearer(mint(valid_claims(), rsa)))
    refused(TokenVerifier(HS256), bearer(mint(valid_claims(), SECRET, algorithm="HS512")))
    refused(TokenVerifier(HS256), bearer(mint(valid_claims(), rsa)))


def test_a_wrong_alg_is_refused_before_any_key_is_fetched(rsa):
    verifier, endpoint = jwks_verifier(rsa)
    refused(verifier, bearer(hmac_signed(valid_claims(), rsa.public_pem(),
                                         {"alg": "HS256", "kid": rsa.kid})))
    refused(verifier, bearer(hand_made({"alg": "none", "kid": rsa.kid}, valid_claims(),
                                       lambda _: b"x")))
    assert endpoint.fetches == 0


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(rsa):
    verifier, _ = jwks_verifier(rsa)
    refused(verifier, bearer(mint(valid_claims(), rsa_key(rsa.kid))))


def test_a_token_without_a_kid_is_refused_when_keys_come_from_a_jwk_set(rsa):
    verifier, _ = jwks_verifier(rsa)
    token = hand_made({"alg": "RS256"}, valid_claims(), lambda _: b"sig")
    refused(verifier, bearer(token))
    refused(verifier, bearer(mint(valid_claims(), rsa, headers={"kid": ""})))


@WEAK_KEY
def test_a_short_rsa_key_in_the_jwk_set_does_not_verify():
    weak = rsa_key("weak", bits=1024)
    verifier, _ = jwks_verifier(weak)
    refused(verifier, bearer(mint(valid_claims(), weak)))


# --- Time, audience, issuer -----------------------------------------------------------------


def test_an_expired_token_and_one_not_yet_valid_are_refused():
    now = int(time.time())
    verifier = TokenVerifier(HS256)
    refused(verifier, bearer(mint(valid_claims(exp=now - 3600), SECRET)))
    refused(verifier, bearer(mint(valid_claims(nbf=now + 3600), SECRET)))


def test_a_token_without_exp_is_refused():
    refused(TokenVerifier(HS256), bearer(mint(without(valid_claims(), "exp"), SECRET)))


@pytest.mark.parametrize("leeway", [0, 30])
def test_the_leeway_is_honoured_at_the_edges(leeway):
    # 5 s either side of the edge: far more than the test takes, far less than the leeway.
    verifier = TokenVerifier(replace(HS256, leeway_seconds=leeway))
    now = int(time.time())
    inside, outside = leeway - 5, leeway + 5
    if leeway:
        assert verify(verifier, bearer(mint(valid_claims(exp=now - inside), SECRET)))
        assert verify(verifier, bearer(mint(valid_claims(nbf=now + inside), SECRET)))
    refused(verifier, bearer(mint(valid_claims(exp=now - outside), SECRET)))
    refused(verifier, bearer(mint(valid_claims(nbf=now + outside), SECRET)))


def test_the_default_leeway_is_thirty_seconds():
    assert AuthSettings().leeway_seconds == 30


@pytest.mark.parametrize("claims", [
    valid_claims(aud="other", iss="https://idp/"),
    valid_claims(aud=["other", "also-other"], iss="https://idp/"),
    valid_claims(iss="https://idp/"),
    valid_claims(aud="f1", iss="https://other-idp/"),
    valid_claims(aud="f1"),
], ids=["wrong-aud", "wrong-aud-list", "no-aud", "wrong-iss", "no-iss"])
def test_wrong_or_missing_aud_and_iss_are_refused_when_configured(claims):
    verifier = TokenVerifier(replace(HS256, jwt_audience="f1", jwt_issuer="https://idp/"))
    refused(verifier, bearer(mint(claims, SECRET)))


# --- The claims ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yacht_id", "user_id", "org_id", "role"])
@pytest.mark.parametrize("value", ["", "   ", None, 42, ["x"], {"id": "x"}, "<missing>"])
def test_each_required_claim_missing_empty_or_not_a_string_is_refused(name, value):
    claims = without(valid_claims(), name) if value == "<missing>" else valid_claims(
        **{name: value})
    refused(TokenVerifier(HS256), bearer(mint(claims, SECRET)))


@pytest.mark.parametrize("name", ["yacht_id", "user_id", "org_id"])
@pytest.mark.parametrize("value", [
    "not-a-uuid", "1234", YACHT_ID[:-1], YACHT_ID + "0", YACHT_ID.replace("-", ""),
    f"{{{YACHT_ID}}}", f"urn:uuid:{YACHT_ID}", f" {YACHT_ID}", f"{YACHT_ID}\n",
    YACHT_ID.replace("0", "g", 1),
])
def test_identity_claims_that_are_not_uuids_are_refused(name, value):
    refused(TokenVerifier(HS256), bearer(mint(valid_claims(**{name: value}), SECRET)))


# --- Malformed headers ----------------------------------------------------------------------


VALID_HS256 = mint(valid_claims(lifetime=86400), SECRET)


@pytest.mark.parametrize("header", [
    None, "", " ", "Bearer", "Bearer ", "bearer\t", f"Basic {VALID_HS256}", "Basic x",
    f"Token {VALID_HS256}", VALID_HS256, f"Bearer {VALID_HS256} extra",
    f"Bearer Bearer {VALID_HS256}", f"Bearer{VALID_HS256}", "garbage", "Bearer garbage",
    "Bearer a.b", "Bearer a.b.c.d", "Bearer ..", "Bearer a.b.", f"Bearer {VALID_HS256}=",
    "Bearer é.é.é", "Bearer \x00.\x00.\x00", "Bearer " + "a" * 10_000,
    "Bearer " + ".".join(["a" * 3000] * 3), f"Bearer {VALID_HS256}" + " " * 9000,
    "Bearer " + "A" * 2_000_000,
], ids=lambda h: repr(h)[:40])
def test_malformed_authorization_headers_are_refused(header):
    refused(TokenVerifier(HS256), header)


def test_the_valid_token_of_the_malformed_cases_is_itself_accepted():
    assert verify(TokenVerifier(HS256), bearer(VALID_HS256)) == EXPECTED


@pytest.mark.parametrize("segments", [
    ("e30", "e30", "c2ln"),  # {} . {} . "sig"
    ("bnVsbA", "bnVsbA", "c2ln"),  # null . null
    ("WzFd", "e30", "c2ln"),  # [1] as the header
    ("eyJhbGciOiJIUzI1NiJ9", "WzFd", "c2ln"),  # a list as the payload
    ("eyJhbGciOiJIUzI1NiJ9", "_-_-", "c2ln"),  # a payload that is not JSON
    ("eyJhbGciOlsiSFMyNTYiXX0", "e30", "c2ln"),  # {"alg": ["HS256"]}
    ("eyJhbGciOiJIUzI1NiIsImtpZCI6MX0", "e30", "c2ln"),  # {"alg": "HS256", "kid": 1}
    ("eyJhbGciOiJIUzI1NiIsImNyaXQiOlsieCJdfQ", "e30", "c2ln"),  # an unknown crit
])
def test_undecodable_tokens_are_refused_and_nothing_else_escapes(segments, rsa):
    header = bearer(".".join(segments))
    refused(TokenVerifier(HS256), header)
    refused(jwks_verifier(rsa)[0], header)


def test_a_refusal_carries_no_cause_a_client_could_be_shown():
    with pytest.raises(Unauthorized) as caught:
        verify(TokenVerifier(HS256), bearer(mint(valid_claims(), SECRET[::-1])))
    assert caught.value.__cause__ is None and caught.value.__context__ is None


# --- The JWK set ----------------------------------------------------------------------------


def test_parse_jwks_keeps_only_signing_keys_of_the_configured_algorithm(rsa, ec):
    other = rsa_key("other").public_jwk()
    keys = parse_jwks(json.dumps(jwk_set(
        rsa, ec,
        {**other, "kid": "enc", "use": "enc"},
        {**other, "kid": "rs512", "alg": "RS512"},
        {**json.loads(RSAAlgorithm.to_jwk(rsa_key().private_key)), "kid": "private"},
        {**other, "kid": ""},
        without(other, "kid"),
        {**other, "kid": rsa.kid},  # a duplicate kid: the first one stays
        {**other, "kid": "broken", "n": "!!"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        "not-a-key",
        {**without(other, "alg", "use"), "kid": "no-alg"},  # alg and use are optional
    )).encode(), "RS256")
    assert sorted(keys) == ["no-alg", rsa.kid]
    assert keys[rsa.kid].key.public_numbers() == rsa.private_key.public_key().public_numbers()
    assert sorted(parse_jwks(json.dumps(jwk_set(rsa, ec)).encode(), "ES256")) == [ec.kid]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe", b"[]", b'{"keys": {}}', b'{"keys": []}',
    b'{"keys": [{"kty": "EC", "crv": "P-384", "kid": "x"}]}',
])
def test_a_body_without_a_usable_key_is_not_a_jwk_set(body):
    with pytest.raises(ValueError):
        parse_jwks(body, "RS256")


def test_the_jwk_set_is_fetched_once_and_kept_for_its_ttl(rsa):
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock, jwks_ttl_seconds=300)
    token = bearer(mint(valid_claims(), rsa))
    for _ in range(5):
        verify(verifier, token)
    clock.now += 299
    verify(verifier, token)
    assert endpoint.fetches == 1
    clock.now += 1
    verify(verifier, token)
    assert endpoint.fetches == 2


def test_an_unknown_kid_refetches_once_then_is_refused(rsa):
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock)
    verify(verifier, bearer(mint(valid_claims(), rsa)))
    clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS
    stranger = bearer(mint(valid_claims(), rsa_key("stranger")))
    refused(verifier, stranger)
    assert endpoint.fetches == 2
    refused(verifier, stranger)
    assert endpoint.fetches == 2  # not again within the interval


def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(rsa):
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock)
    tokens = [bearer(mint(valid_claims(), rsa, headers={"kid": f"made-up-{i}"}))
              for i in range(200)]

    async def flood() -> list:
        return await asyncio.gather(*(verifier.verify(t) for t in tokens),
                                    return_exceptions=True)

    for round_ in range(1, 4):
        results = asyncio.run(flood())
        assert all(isinstance(r, Unauthorized) and str(r) == REFUSED for r in results)
        assert endpoint.fetches == round_
        clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS / 2
        asyncio.run(flood())
        assert endpoint.fetches == round_
        clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS / 2


def test_concurrent_requests_on_a_cold_cache_share_one_fetch(rsa):
    verifier, endpoint = jwks_verifier(rsa)
    token = bearer(mint(valid_claims(), rsa))

    async def many() -> list:
        return await asyncio.gather(*(verifier.verify(token) for _ in range(50)))

    assert asyncio.run(many()) == [EXPECTED] * 50
    assert endpoint.fetches == 1


def test_a_rotated_key_verifies_once_published_and_a_retired_one_expires_with_the_ttl(rsa):
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock, jwks_ttl_seconds=300)
    old = bearer(mint(valid_claims(), rsa))
    assert verify(verifier, old) == EXPECTED
    new_key = rsa_key("rsa-2")
    endpoint.jwks = jwk_set(rsa, new_key)
    clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS
    assert verify(verifier, bearer(mint(valid_claims(), new_key))) == EXPECTED
    endpoint.jwks = jwk_set(new_key)  # the old key is retired
    assert verify(verifier, old) == EXPECTED  # until the set it came in expires
    clock.now += 300
    refused(verifier, old)
    assert verify(verifier, bearer(mint(valid_claims(), new_key))) == EXPECTED


def test_an_unreachable_endpoint_refuses_tokens_and_logs_once_per_outage(rsa, caplog):
    caplog.set_level(logging.DEBUG, logger=auth.__name__)
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock)
    token = bearer(mint(valid_claims(), rsa))
    endpoint.error = ConnectionRefusedError(111, "Connection refused")
    for _ in range(3):
        refused(verifier, token)
        clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS
    assert endpoint.fetches == 3
    endpoint.error = None
    assert verify(verifier, token) == EXPECTED
    endpoint.error = OSError("Network is unreachable")
    clock.now += 300
    refused(verifier, token)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert all(URL in w and "cannot be used" in w for w in warnings)
    assert "Network is unreachable" in warnings[1]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"JWKS {URL} usable again: 1 key(s)"]


def test_a_failed_refetch_keeps_the_fresh_key_set(rsa):
    clock = FakeClock()
    verifier, endpoint = jwks_verifier(rsa, clock=clock)
    token = bearer(mint(valid_claims(), rsa))
    verify(verifier, token)
    endpoint.error = TimeoutError()
    clock.now += auth.JWKS_REFETCH_INTERVAL_SECONDS
    refused(verifier, bearer(mint(valid_claims(), rsa_key("unknown"))))
    assert endpoint.fetches == 2
    assert verify(verifier, token) == EXPECTED


@pytest.mark.parametrize("jwks", [{"keys": []}, {"no": "keys"}, ["x"]])
def test_an_endpoint_serving_no_usable_key_refuses_tokens(rsa, jwks):
    verifier, endpoint = jwks_verifier(rsa)
    endpoint.jwks = jwks
    refused(verifier, bearer(mint(valid_claims(), rsa)))


def test_a_hanging_endpoint_is_given_up_on_after_the_timeout(rsa, monkeypatch):
    monkeypatch.setattr(auth, "JWKS_FETCH_TIMEOUT_SECONDS", 0.1)
    verifier, endpoint = jwks_verifier(rsa)
    endpoint.hang = True
    started = time.monotonic()
    refused(verifier, bearer(mint(valid_claims(), rsa)))
    assert time.monotonic() - started < 2


def test_a_client_that_hangs_up_mid_fetch_does_not_cancel_it_for_the_others(rsa):
    endpoint = FakeJwks(rsa)
    release = asyncio.Event()

    async def slow(url: str, timeout: float) -> bytes:
        await release.wait()
        return await endpoint(url, timeout)

    verifier = TokenVerifier(AuthSettings(jwt_algorithm="RS256", jwt_jwks_url=URL),
                             fetch_jwks=slow)
    token = bearer(mint(valid_claims(), rsa))

    async def scenario() -> Claims:
        first = asyncio.ensure_future(verifier.verify(token))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(verifier.verify(token))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        release.set()
        return await second

    assert asyncio.run(scenario()) == EXPECTED
    assert endpoint.fetches == 1
