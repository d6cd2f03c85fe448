"""`POST /api/analytics/search-click` over real PostgreSQL: who clicked comes from the token,
what was clicked from a strictly checked body, and nothing is recorded for a row the
token's yacht does not have."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest

from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import running_door, token_for
from tests.support.tokens import ORG_ID, USER_ID

CLICKS = "/api/analytics/search-click"


@pytest.fixture
def yachts(db):
    a, b = add_yacht(db, "Alpha"), add_yacht(db, "Bravo")
    a_keys = add_rows(db, a.id, 4, texts=["Racor oil filter", "Anchor winch", "Manual",
                                          "Crew email"])  # ..., document, email
    b_keys = add_rows(db, b.id, 1, texts=["Racor oil filter"])
    return SimpleNamespace(id=a.id, keys=a_keys), SimpleNamespace(id=b.id, keys=b_keys)


@pytest.fixture
def door(database_url, redis_url):
    with running_door(database_url, redis_url) as running:
        yield running


def click_body(key, **overrides):
    object_type, object_id = key
    body = {"search_id": str(uuid.uuid4()), "query_text": "Racor  Filter",
            "clicked_object_type": object_type, "clicked_object_id": str(object_id),
            "click_position": 2, "dwell_time_ms": 5400, "was_successful": True}
    body.update(overrides)
    return body


def recorded(db):
    with db.cursor() as cur:
        cur.execute("SELECT id, org_id, yacht_id, user_id, query_text, query_normalized, "
                    "clicked_object_type, clicked_object_id, click_position, dwell_time_ms "
                    "FROM search_click_events")
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_a_click_is_recorded_for_the_tokens_user_and_yacht(db, yachts, door):
    a, _ = yachts
    response = door.post(CLICKS, token=token_for(a.id), json=click_body(a.keys[0]))
    assert response.status_code == 202
    (row,) = recorded(db)
    assert response.json() == {"click_id": str(row["id"])}
    assert (str(row["org_id"]), str(row["yacht_id"]), str(row["user_id"])) == (
        ORG_ID, str(a.id), USER_ID)
    assert (row["query_text"], row["query_normalized"]) == ("Racor  Filter", "racor filter")
    assert (row["clicked_object_type"], str(row["clicked_object_id"])) == (
        a.keys[0][0], str(a.keys[0][1]))
    assert (row["click_position"], row["dwell_time_ms"]) == (2, 5400)


def test_a_click_on_another_yachts_row_is_not_found_and_not_recorded(db, yachts, door):
    a, b = yachts
    response = door.post(CLICKS, token=token_for(a.id), json=click_body(b.keys[0]))
    assert response.status_code == 404
    assert str(b.keys[0][1]) in response.json()["error"]
    assert recorded(db) == []


@pytest.mark.parametrize("field", ["yacht_id", "user_id", "org_id", "role"])
def test_a_body_naming_who_clicked_is_refused_naming_the_field(db, yachts, door, field):
    a, b = yachts
    body = click_body(a.keys[0], **{field: str(b.id)})
    response = door.post(CLICKS, token=token_for(a.id), json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert recorded(db) == []


@pytest.mark.parametrize("overrides, field", [
    ({"clicked_object_id": "not-a-uuid"}, "clicked_object_id"),
    ({"clicked_object_type": "Robert'); DROP TABLE x;--"}, "clicked_object_type"),
    ({"click_position": 0}, "click_position"),
    ({"click_position": "first"}, "click_position"),
    ({"dwell_time_ms": -1}, "dwell_time_ms"),
    ({"query_text": ""}, "query_text"),
    ({"query_text": "   "}, "query_text"),
    ({"query_text": "\x00"}, "query_text"),
    ({"search_timestamp": "yesterday"}, "search_timestamp"),
    ({"search_id": 7}, "search_id"),
])
def test_a_bad_click_field_is_refused_naming_it(db, yachts, door, overrides, field):
    a, _ = yachts
    response = door.post(CLICKS, token=token_for(a.id), json=click_body(a.keys[0], **overrides))
    assert response.status_code == 422, response.text
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]
    assert recorded(db) == []


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"null", b'"click"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(db, yachts, door, content):
    a, _ = yachts
    response = door.post(CLICKS, token=token_for(a.id), content=content,
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert recorded(db) == []


def test_a_body_over_eight_kibibytes_is_refused_before_it_is_read(db, yachts, door):
    a, _ = yachts
    body = json.dumps(click_body(a.keys[0], query_text="x" * 9000))
    response = door.post(CLICKS, token=token_for(a.id), content=body,
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    chunked = door.post(CLICKS, token=token_for(a.id),
                        content=iter([body[:4000].encode(), body[4000:].encode()]),
                        headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert recorded(db) == []


def test_the_token_is_checked_before_the_body(db, yachts, door):
    response = door.post(CLICKS, content=b"x" * 100_000)
    assert response.status_code == 401
    assert door.post(CLICKS, token="forged", json={}).status_code == 401
    assert recorded(db) == []


def test_a_click_on_a_row_the_role_could_not_have_been_shown_is_not_recorded(db, yachts,
                                                                            door):
    a, _ = yachts
    email = a.keys[3]
    assert email[0] == "email"
    crew = door.post(CLICKS, token=token_for(a.id, role="crew"), json=click_body(email))
    assert crew.status_code == 404
    guest = door.post(CLICKS, token=token_for(a.id, role="guest"), json=click_body(a.keys[0]))
    assert guest.status_code == 403
    assert recorded(db) == []
    captain = door.post(CLICKS, token=token_for(a.id), json=click_body(email))
    assert captain.status_code == 202
