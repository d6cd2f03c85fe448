"""`GET /api/f1/search` served by uvicorn over real PostgreSQL and Redis, rows embedded by
the real worker: ranking within the token's yacht, roles, tokens, SSE, bounds, mismatches."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import embed_all, running_door, token_for
from tests.support.tokens import SECRET, hand_made, hmac_signed, mint, rsa_key, valid_claims

TEXTS = ["Racor 500 oil filter element, replaced at 1200 hours",
         "Anchor winch service log, port side",
         "Desalinator manual, chapter 3: membranes",
         "Crew email about the tender davit",
         "Flag state safety certificate, renewed"]
# add_rows gives the n-th row OBJECT_TYPES[n % 5]: work_order, equipment, document, email,
# certificate, in TEXTS order.


@pytest.fixture
def fleet(db, database_url):
    """Two yachts with the same texts, embedded; yacht B's rows must never reach A's users."""
    a, b = add_yacht(db, "Alpha"), add_yacht(db, "Bravo")
    keys_a = add_rows(db, a.id, len(TEXTS), texts=TEXTS)
    # B also holds the query's very words: a closer vector than any of A's.
    keys_b = add_rows(db, b.id, len(TEXTS) + 1, texts=[*TEXTS, "racor oil filter"])
    embed_all(database_url, a.id)
    embed_all(database_url, b.id)
    return a, b, keys_a, keys_b


@pytest.fixture
def door(database_url, redis_url):
    with running_door(database_url, redis_url) as running:
        yield running


def ids(response) -> list[str]:
    return [hit["object_id"] for hit in response.json()["results"]]


def test_a_search_ranks_the_rows_of_the_tokens_yacht_by_meaning(fleet, door):
    a, _, keys_a, keys_b = fleet
    response = door.search(token_for(a.id), "racor oil filter")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "racor oil filter"
    assert body["cached"] is False
    uuid.UUID(body["search_id"])
    hits = body["results"]
    assert hits[0]["object_id"] == str(keys_a[0][1])
    assert hits[0]["object_type"] == "work_order"
    assert hits[0]["snippet"].startswith("Racor 500 oil filter")
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.3 > scores[-1]
    assert {hit["object_id"] for hit in hits} <= {str(i) for _, i in keys_a}
    assert not {hit["object_id"] for hit in hits} & {str(i) for _, i in keys_b}


def test_the_yacht_comes_from_the_token_whatever_the_request_says(fleet, door):
    a, b, keys_a, _ = fleet
    response = door.get("/api/f1/search", token=token_for(a.id),
                        params={"q": "anchor winch", "yacht_id": str(b.id)},
                        headers={"X-Yacht-Id": str(b.id)})
    assert response.status_code == 200
    assert set(ids(response)) <= {str(i) for _, i in keys_a}


def test_a_yacht_with_nothing_embedded_finds_nothing(db, fleet, door):
    empty = add_yacht(db, "Charlie")
    response = door.search(token_for(empty.id), "oil filter")
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_an_empty_query_lists_the_yachts_latest_rows_unranked(fleet, door):
    a, _, keys_a, _ = fleet
    response = door.search(token_for(a.id), "   ")
    assert response.status_code == 200
    hits = response.json()["results"]
    assert {hit["object_id"] for hit in hits} == {str(i) for _, i in keys_a}
    assert all(hit["score"] is None for hit in hits)


def test_limit_caps_the_results(fleet, door):
    a, *_ = fleet
    assert len(ids(door.search(token_for(a.id), "filter", limit=2))) == 2


@pytest.mark.parametrize("params, field", [
    ({"q": "x", "limit": "0"}, "limit"),
    ({"q": "x", "limit": "101"}, "limit"),
    ({"q": "x", "limit": "ten"}, "limit"),
    ({"q": "x" * 10_001}, "q"),
])
def test_an_out_of_bounds_parameter_is_refused_naming_it(fleet, door, params, field):
    a, *_ = fleet
    response = door.get("/api/f1/search", token=token_for(a.id), params=params)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", field]]


@pytest.mark.parametrize("role, visible", [
    ("captain", {"work_order", "equipment", "document", "email", "certificate"}),
    ("engineer", {"work_order", "equipment", "document", "certificate"}),
    ("crew", {"work_order", "equipment", "document"}),
])
def test_a_role_sees_only_its_object_types(fleet, door, role, visible):
    a, *_ = fleet
    for q in ("", "crew email tender davit", "safety certificate"):
        response = door.search(token_for(a.id, role=role), q)
        assert response.status_code == 200
        assert {hit["object_type"] for hit in response.json()["results"]} <= visible
    every = door.search(token_for(a.id, role=role), "")
    assert {hit["object_type"] for hit in every.json()["results"]} == visible


def test_a_role_the_server_does_not_know_may_not_search(fleet, door):
    a, *_ = fleet
    response = door.search(token_for(a.id, role="guest"), "oil")
    assert response.status_code == 403
    assert response.json() == {"error": "role 'guest' may not search"}


def test_roles_are_configurable(fleet, database_url, redis_url):
    a, *_ = fleet
    with running_door(database_url, redis_url,
                      role_object_types="guest=equipment") as door:
        response = door.search(token_for(a.id, role="guest"), "")
        assert {hit["object_type"] for hit in response.json()["results"]} == {"equipment"}
        assert door.search(token_for(a.id, role="captain"), "").status_code == 403


def forged_tokens(yacht_id: str) -> dict[str, str | None]:
    claims = valid_claims(yacht_id=yacht_id)
    return {
        "no header": None,
        "not a token": "not-a-jwt",
        "another secret": mint(claims, "another-secret-of-thirty-two-byte"),
        "alg none": hand_made({"alg": "none", "typ": "JWT"}, claims),
        "expired": mint(valid_claims(yacht_id=yacht_id, lifetime=-3600), SECRET),
        "no yacht": mint({k: v for k, v in claims.items() if k != "yacht_id"}, SECRET),
        "yacht not a uuid": mint({**claims, "yacht_id": "'; DROP TABLE x;--"}, SECRET),
    }


@pytest.mark.parametrize("case", list(forged_tokens(str(uuid.uuid4()))))
def test_a_search_without_a_valid_token_is_unauthorized_and_reads_nothing(fleet, door, case):
    a, *_ = fleet
    token = forged_tokens(str(a.id))[case]
    response = door.search(token, "oil filter") if token else door.get(
        "/api/f1/search", params={"q": "oil filter"})
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_rs256_tokens_verify_through_the_jwks_and_an_hs256_forgery_does_not(
        fleet, database_url, redis_url, jwks_server):
    a, *_ = fleet
    key = rsa_key("k1")
    jwks_server.publish(key)
    claims = valid_claims(yacht_id=str(a.id))
    with running_door(database_url, redis_url, jwt_secret="", jwt_algorithm="RS256",
                      jwt_jwks_url=jwks_server.url) as door:
        assert door.search(mint(claims, key), "oil").status_code == 200
        confused = hmac_signed(claims, key.public_pem(),
                               {"alg": "HS256", "typ": "JWT", "kid": "k1"})
        assert door.search(confused, "oil").status_code == 401
        assert door.search(mint(claims, SECRET), "oil").status_code == 401


def test_a_search_can_stream_its_results_as_server_sent_events(fleet, door):
    a, _, keys_a, _ = fleet
    response = door.get("/api/f1/search", token=token_for(a.id),
                        params={"q": "racor oil filter"},
                        headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        if block:
            name, data = block.split("\n")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    *results, (last, done) = events
    assert last == "done"
    assert {name for name, _ in results} == {"result"}
    assert [data["position"] for _, data in results] == list(range(1, len(results) + 1))
    assert results[0][1]["object_id"] == str(keys_a[0][1])
    assert done["count"] == len(results) and done["query"] == "racor oil filter"
    uuid.UUID(done["search_id"])


def test_a_server_embedding_queries_unlike_the_rows_refuses_to_rank(fleet, database_url,
                                                                     redis_url):
    a, *_ = fleet
    with running_door(database_url, redis_url, dimensions=256) as door:
        response = door.search(token_for(a.id), "oil filter")
    assert response.status_code == 409
    message = response.json()["error"]
    assert "(1536)" in message and "(256)" in message
    assert "EMBEDDING_DIMENSIONS" in message


def test_the_length_is_read_from_the_vectors_when_the_column_has_none(db, fleet,
                                                                    database_url, redis_url):
    """The length check reads the column's type; a column altered to plain `vector` (no
    length) makes it read the vectors themselves, and a server of another length is still
    refused."""
    a, _, keys_a, _ = fleet
    with db.cursor() as cur:
        cur.execute("ALTER TABLE search_index ALTER COLUMN embedding TYPE vector")
    with running_door(database_url, redis_url) as door:
        response = door.search(token_for(a.id), "racor oil filter")
    assert response.status_code == 200
    assert ids(response)[0] == str(keys_a[0][1])
    with running_door(database_url, redis_url, dimensions=256) as door:
        assert door.search(token_for(a.id), "oil filter").status_code == 409


def test_search_is_unavailable_not_failing_when_postgres_is_away(fleet, redis_url):
    a, *_ = fleet
    with running_door("postgresql://f1@127.0.0.1:9/f1", redis_url) as door:
        response = door.search(token_for(a.id), "oil filter")
        assert response.status_code == 503
        assert response.json() == {"error": "search is unavailable"}
        health = door.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["redis"] == "ok"


def test_health_and_metrics(fleet, door):
    a, *_ = fleet
    assert door.get("/health").json() == {"status": "ok", "postgres": "ok", "redis": "ok"}
    door.search(token_for(a.id), "oil")
    door.search("bad", "oil")
    text = door.get("/metrics").text
    assert 'f1_search_requests_total{endpoint="/api/f1/search",status="200"} 1.0' in text
    assert 'f1_search_requests_total{endpoint="/api/f1/search",status="401"} 1.0' in text
    assert "f1_search_request_seconds_bucket" in text


def test_the_search_page_loads_only_its_own_files(door):
    page = door.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'src="/page/search.js"' in page.text
    script = door.get("/page/search.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/api/analytics/search-click" in script.text
    for name in ("index.html", "missing.js", "..%2Fapp.py"):
        assert door.get(f"/page/{name}").status_code == 404
