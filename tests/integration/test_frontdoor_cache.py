"""The search cache in a real Redis: hits, invalidation by every re-embed (the worker's and
the operator's generation bumps), single flight, Redis away, and the login pre-warm."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
import redis

from f1backfill.feedback import record_click
from f1backfill.frontdoor.cache import search_key
from f1backfill.frontdoor.prewarm import COMMON_QUERIES
from f1backfill.generations import Generations, generation_key
from f1backfill.localredis import LocalRedis
from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import embed_all, running_door, token_for
from tests.support.tokens import ORG_ID, USER_ID
from tests.support.waiting import wait_for

TEXTS = ["Racor 500 oil filter element", "Anchor winch service log",
         "Desalinator manual, chapter 3", "Crew email about the tender",
         "Flag state safety certificate"]


@pytest.fixture
def yacht(db, database_url, redis_url):
    yacht = add_yacht(db, "Alpha")
    keys = add_rows(db, yacht.id, len(TEXTS), texts=TEXTS)
    embed_all(database_url, yacht.id, redis_url=redis_url)
    return SimpleNamespace(id=yacht.id, keys=keys)


@pytest.fixture
def door(database_url, redis_url):
    with running_door(database_url, redis_url) as running:
        yield running


@pytest.fixture
def rds(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_a_repeated_search_is_answered_from_the_cache(yacht, door, rds):
    token = token_for(yacht.id)
    first = door.search(token, "Oil  FILTER")
    second = door.search(token, "oil filter")
    assert (first.json()["cached"], second.json()["cached"]) == (False, True)
    assert first.json()["results"] == second.json()["results"]
    generation = int(rds.get(generation_key(str(yacht.id))))
    key = search_key(str(yacht.id), "captain", generation, "oil filter", 20)
    assert 0 < rds.ttl(key) <= 120
    metrics = door.get("/metrics").text
    assert "f1_search_cache_hits_total 1.0" in metrics
    assert "f1_search_cache_misses_total 1.0" in metrics


def test_cached_results_are_per_role_and_per_limit(yacht, door):
    assert door.search(token_for(yacht.id), "certificate").json()["cached"] is False
    assert door.search(token_for(yacht.id, role="crew"), "certificate").json()["cached"] is False
    assert door.search(token_for(yacht.id), "certificate", limit=3).json()["cached"] is False
    crew = door.search(token_for(yacht.id, role="crew"), "certificate").json()
    assert crew["cached"] is True
    assert "certificate" not in {hit["object_type"] for hit in crew["results"]}


def test_a_re_embed_by_the_worker_invalidates_the_yachts_cached_searches(
        db, database_url, redis_url, yacht, door):
    token = token_for(yacht.id)
    before = door.search(token, "watermaker membrane").json()
    assert door.search(token, "watermaker membrane").json()["cached"] is True
    object_type, object_id = yacht.keys[2]
    with db.cursor() as cur:  # the desalinator manual is rewritten and re-queued
        cur.execute("UPDATE search_index SET search_text = %s, embedding_status = 'pending' "
                    "WHERE object_type = %s AND object_id = %s",
                    ("Watermaker membrane replacement manual", object_type, object_id))
    embed_all(database_url, yacht.id, redis_url=redis_url)
    after = door.search(token, "watermaker membrane").json()
    assert after["cached"] is False
    assert after["results"][0]["object_id"] == str(object_id)
    assert after["results"][0]["snippet"] == "Watermaker membrane replacement manual"
    assert after["results"] != before["results"]


def test_a_generation_bump_from_elsewhere_invalidates_only_that_yacht(
        db, database_url, redis_url, yacht, door):
    other = add_yacht(db, "Bravo")
    add_rows(db, other.id, 3, texts=TEXTS[:3])
    embed_all(database_url, other.id, redis_url=redis_url)
    for y in (yacht, other):
        door.search(token_for(y.id), "anchor")
    Generations(redis_url).bump(str(yacht.id))  # as the operator does when a Job ends
    assert door.search(token_for(yacht.id), "anchor").json()["cached"] is False
    assert door.search(token_for(other.id), "anchor").json()["cached"] is True


def test_concurrent_misses_of_one_search_embed_the_query_once(yacht, door):
    searcher = door.door.searcher
    provider = searcher.provider
    calls = []

    class Counting:  # the real provider, counted and slowed so the misses overlap
        def embed(self, texts):
            calls.append(texts)
            time.sleep(0.3)
            return provider.embed(texts)

    searcher.provider = Counting()
    token = token_for(yacht.id)
    answers = [None] * 8

    def one(n: int) -> None:
        answers[n] = door.search(token, "generator impeller")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [200] * 8
    assert len(calls) == 1
    assert len({str(answer.json()["results"]) for answer in answers}) == 1


def test_search_is_served_uncached_while_redis_is_away(db, database_url, yacht, caplog):
    server = LocalRedis.start()
    try:
        with running_door(database_url, server.url) as door:
            token = token_for(yacht.id)
            door.search(token, "oil filter")
            assert door.search(token, "oil filter").json()["cached"] is True
            server.stop()
            with caplog.at_level(logging.WARNING, logger="f1backfill.frontdoor.cache"):
                answers = [door.search(token, "oil filter") for _ in range(3)]
            assert [a.status_code for a in answers] == [200] * 3
            assert [a.json()["cached"] for a in answers] == [False] * 3
            assert answers[0].json()["results"][0]["object_id"] == str(yacht.keys[0][1])
            warnings = [r for r in caplog.records if "Redis is away" in r.getMessage()]
            assert len(warnings) == 1
            # Still ready: searches are answered, uncached.
            health = door.get("/health")
            assert health.status_code == 200
            assert health.json() == {"status": "degraded", "postgres": "ok",
                                     "redis": "unreachable"}
            assert "f1_search_cache_errors_total" in door.get("/metrics").text
    finally:
        server.stop()


def test_a_login_pre_warms_the_common_and_the_yachts_top_queries(db, yacht, door, rds):
    for query, times in (("Racor impeller", 3), ("anchor chain", 1)):
        for _ in range(times):
            record_click(db, org_id=ORG_ID, yacht_id=str(yacht.id), user_id=USER_ID,
                         query_text=query, object_type=yacht.keys[0][0],
                         object_id=str(yacht.keys[0][1]), position=1)
    response = door.post("/api/f1/session", token=token_for(yacht.id, role="crew"))
    assert response.status_code == 202
    generation = int(rds.get(generation_key(str(yacht.id))) or 0)
    expected = {search_key(str(yacht.id), "crew", generation, q, 20)
                for q in (*COMMON_QUERIES, "racor impeller", "anchor chain")}
    wait_for(lambda: expected <= set(rds.scan_iter("f1:search:*")), timeout=20,
             message=lambda: f"cached: {sorted(rds.scan_iter('f1:search:*'))}")
    assert set(rds.scan_iter("f1:search:*")) == expected
    # The crew's first search is a hit; another role's is not.
    assert door.search(token_for(yacht.id, role="crew"), "Racor Impeller").json()["cached"]
    assert not door.search(token_for(yacht.id), "racor impeller").json()["cached"]
    metrics = door.get("/metrics").text
    assert f"f1_search_prewarmed_total {float(len(expected))}" in metrics


def test_a_second_login_warms_only_what_is_not_cached(yacht, door):
    token = token_for(yacht.id)
    door.post("/api/f1/session", token=token)
    wait_for(lambda: f"f1_search_prewarmed_total {float(len(COMMON_QUERIES))}"
             in door.get("/metrics").text, timeout=20)
    door.post("/api/f1/session", token=token)
    wait_for(lambda: "f1_search_prewarm_runs_total 2.0" in door.get("/metrics").text)
    wait_for(lambda: not door.door.background, timeout=20)
    assert f"f1_search_prewarmed_total {float(len(COMMON_QUERIES))}" in door.get(
        "/metrics").text


def test_a_login_answers_at_once_whatever_the_pre_warm_costs(yacht, door):
    searcher = door.door.searcher
    provider = searcher.provider

    class Slow:
        def embed(self, texts):
            time.sleep(1.0)
            return provider.embed(texts)

    searcher.provider = Slow()
    started = time.monotonic()
    assert door.post("/api/f1/session", token=token_for(yacht.id)).status_code == 202
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("token, status", [(None, 401), ("guest", 403)])
def test_a_login_that_may_not_search_warms_nothing(yacht, door, rds, token, status):
    token = token_for(yacht.id, role="guest") if token else None
    assert door.post("/api/f1/session", token=token).status_code == status
    assert list(rds.scan_iter("f1:search:*")) == []


def test_the_pre_warm_survives_an_unreadable_click_table(db, yacht, door, rds):
    with db.cursor() as cur:
        cur.execute("ALTER TABLE search_click_events RENAME TO search_click_events_moved")
    try:
        assert door.post("/api/f1/session", token=token_for(yacht.id)).status_code == 202
        wait_for(lambda: len(list(rds.scan_iter("f1:search:*"))) == len(COMMON_QUERIES),
                 timeout=20)
        assert "f1_search_prewarm_failures_total 1.0" in door.get("/metrics").text
    finally:
        with db.cursor() as cur:
            cur.execute("ALTER TABLE search_click_events_moved RENAME TO search_click_events")

