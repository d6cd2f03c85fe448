"""Click-feedback learning against real Postgres: thresholds, window, idempotence, the
projection limit, hostile query text, concurrent workers, deleted objects."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from f1backfill.cli import main
from f1backfill.config import FeedbackSettings, WorkerSettings
from f1backfill.errors import BackfillError, NotFound
from f1backfill.feedback import learn, record_click
from f1backfill.worker.loop import Worker
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.waiting import wait_for

ORG, USER = str(uuid.uuid4()), str(uuid.uuid4())


def settings(database_url: str, **overrides) -> FeedbackSettings:
    return FeedbackSettings.from_env({}, database_url=database_url, **overrides)


def clicks(db, yacht, key, query: str, positions, *, days_ago: float = 1.0) -> None:
    object_type, object_id = key
    at = datetime.now(UTC) - timedelta(days=days_ago)
    for position in positions:
        record_click(db, org_id=ORG, yacht_id=str(yacht.id), user_id=USER, query_text=query,
                     object_type=object_type, object_id=str(object_id), position=position,
                     clicked_at=at)


def text_of(db, key) -> str:
    with db.cursor() as cur:
        cur.execute("SELECT search_text FROM search_index WHERE object_type = %s "
                    "AND object_id = %s", key)
        return cur.fetchone()[0]


@pytest.fixture
def racor(db):
    yacht = add_yacht(db, "Feedback Yacht", "premium")
    keys = add_rows(db, yacht.id, 3, texts=["Racor 500 oil filter element",
                                             "Desalinator manual, chapter 3",
                                             "Anchor winch service log"])
    with db.cursor() as cur:  # as if embedded already
        cur.execute("UPDATE search_index SET embedding_status = 'embedded'")
    return yacht, keys


def test_a_query_clicked_three_times_in_the_top_five_is_learned_once(db, database_url, racor):
    yacht, keys = racor
    clicks(db, yacht, keys[0], "MTU filtr", [1, 2, 3])
    result = learn(settings(database_url))
    assert result.total_terms == 1
    assert text_of(db, keys[0]) == "Racor 500 oil filter element mtu filtr"
    # Re-queued for embedding, so the next search finds it.
    assert status_counts(db, yacht.id) == {"queued": 1, "embedded": 2}
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM embedding_jobs WHERE status = 'queued'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT yacht_id, terms_added, objects_updated, details "
                    "FROM feedback_learning_log")
        (logged_yacht, terms, objects, details), = cur.fetchall()
    assert (logged_yacht, terms, objects) == (yacht.id, 1, 1)
    assert details["learned"][0]["term"] == "mtu filtr"
    # A second run appends nothing and queues nothing twice.
    assert learn(settings(database_url)).total_terms == 0
    assert text_of(db, keys[0]).count("mtu filtr") == 1


@pytest.mark.parametrize("positions, learned", [
    ([1, 2], False),  # two clicks: not enough evidence
    ([5, 5, 5], True),  # average exactly 5: included
    ([5, 5, 6], False),  # average 5.33: not top-5
    ([1, 1, 13], True),  # average 5.0
])
def test_thresholds_at_their_edges(db, database_url, racor, positions, learned):
    yacht, keys = racor
    clicks(db, yacht, keys[1], "watermaker", positions)
    assert learn(settings(database_url)).total_terms == (1 if learned else 0)
    assert ("watermaker" in text_of(db, keys[1])) is learned


@pytest.mark.parametrize("days_ago, learned", [(29.9, True), (30.1, False)])
def test_only_clicks_within_the_window_count(db, database_url, racor, days_ago, learned):
    yacht, keys = racor
    clicks(db, yacht, keys[1], "watermaker", [1, 1, 1], days_ago=days_ago)
    assert learn(settings(database_url)).total_terms == (1 if learned else 0)


@pytest.mark.parametrize("query, text", [
    ("100%", "pump rated 100 percent"),  # LIKE '%100%%' matched "100"
    ("a_c", "part abc"),  # LIKE '_' matched any character
    ("c:\\pump", "c:pump manual"),  # backslash is not an escape
    ("'; drop table search_index; --", "bilge pump"),
    ("🛥️ tender", "tender davit"),
])
def test_like_metacharacters_in_queries_are_plain_text(db, database_url, query, text):
    yacht = add_yacht(db)
    (key,) = add_rows(db, yacht.id, 1, texts=[text])
    clicks(db, yacht, key, query, [1, 1, 1])
    assert learn(settings(database_url)).total_terms == 1
    assert text_of(db, key) == f"{text} {query}"
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM search_index")  # the table is still there
        assert cur.fetchone()[0] == 1


def test_search_text_never_grows_past_the_projection_limit(db, database_url):
    yacht = add_yacht(db)
    (key,) = add_rows(db, yacht.id, 1, texts=["x" * 11_990])
    clicks(db, yacht, key, "oil filter", [1, 1, 1, 1])  # 4 clicks: tried first
    clicks(db, yacht, key, "pump", [1, 1, 1])
    result = learn(settings(database_url))
    assert {c.term: c.action for c in result.candidates} == {"oil filter": "full",
                                                            "pump": "append"}
    assert text_of(db, key) == "x" * 11_990 + " pump"
    assert len(text_of(db, key)) <= 12_000


def test_a_hundred_kilobyte_query_is_capped_before_it_is_stored(db, database_url):
    yacht = add_yacht(db)
    (key,) = add_rows(db, yacht.id, 1, texts=["short text"])
    clicks(db, yacht, key, "q" * 100_000, [1, 1, 1])
    with db.cursor() as cur:
        cur.execute("SELECT DISTINCT length(query_normalized) FROM search_click_events")
        assert cur.fetchall() == [(200,)]
    learn(settings(database_url))
    assert text_of(db, key) == "short text " + "q" * 200


def test_nul_and_control_characters_are_refused_and_never_stored(db, racor):
    yacht, keys = racor
    for bad in ("oil\x00filter", "esc\x1b[0m"):
        with pytest.raises(BackfillError, match="control character"):
            clicks(db, yacht, keys[0], bad, [1])
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM search_click_events")
        assert cur.fetchone()[0] == 0


def test_a_click_on_an_unknown_object_is_refused_clearly(db, racor):
    yacht, _ = racor
    with pytest.raises(NotFound, match="no search_index row"):
        clicks(db, yacht, ("document", uuid.uuid4()), "manual", [1])


def test_a_click_on_another_yachts_object_is_refused_and_nothing_is_written(db, racor):
    yacht, _ = racor
    other = add_yacht(db, "Other")
    (key,) = add_rows(db, other.id, 1, texts=["racor fuel filter"])
    with pytest.raises(NotFound, match=f"in yacht {yacht.id}"):
        clicks(db, yacht, key, "racor", [1])
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM search_click_events")
        assert cur.fetchone()[0] == 0


def test_clicks_on_an_object_deleted_since_are_ignored(db, database_url, racor):
    yacht, keys = racor
    clicks(db, yacht, keys[2], "windlass", [1, 1, 1])
    with db.cursor() as cur:
        cur.execute("DELETE FROM search_index WHERE object_id = %s", (keys[2][1],))
    result = learn(settings(database_url))
    assert result.total_terms == 0 and result.candidates == []


def test_dry_run_prints_a_table_and_changes_nothing(db, database_url, racor, monkeypatch,
                                                    capsys):
    yacht, keys = racor
    clicks(db, yacht, keys[0], "MTU filtr", [1, 2, 3])
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["feedback", "learn", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mtu filtr" in out and "append" in out and "would add 1 terms" in out
    assert "mtu filtr" not in text_of(db, keys[0])
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM feedback_learning_log")
        assert cur.fetchone()[0] == 0


def test_learning_while_a_worker_embeds_the_same_yacht_loses_nothing(db, database_url):
    yacht = add_yacht(db)
    keys = add_rows(db, yacht.id, 60, seed=3, max_chars=300)
    for key in keys[:20]:
        clicks(db, yacht, key, "gyro stabiliser", [1, 2, 2])
    with FakeOpenAI(latency=0.2) as fake:
        worker = Worker(WorkerSettings.from_env(
            {}, yacht_id=str(yacht.id), database_url=database_url, provider="openai",
            openai_api_key="sk-test", openai_base_url=fake.base_url, prometheus_port=0,
            batch_size=10, batch_sleep_sec=0.0))
        thread = threading.Thread(target=worker.run)
        thread.start()
        wait_for(lambda: status_counts(db, yacht.id).get("processing"), timeout=20)
        result = learn(settings(database_url))
        thread.join(timeout=60)
        # The rows whose text changed mid-flight are queued again, never stored stale.
        Worker(WorkerSettings.from_env(
            {}, yacht_id=str(yacht.id), database_url=database_url, provider="openai",
            openai_api_key="sk-test", openai_base_url=fake.base_url, prometheus_port=0,
            batch_sleep_sec=0.0)).run()
    assert result.total_terms == 20
    for key in keys[:20]:
        assert text_of(db, key).endswith(" gyro stabiliser")
    assert status_counts(db, yacht.id) == {"embedded": 60}
    with db.cursor() as cur:  # every stored vector is of the current text
        cur.execute("SELECT count(*) FROM search_index WHERE search_text LIKE '%%gyro%%' "
                    "AND embedded_at < updated_at")
        assert cur.fetchone()[0] == 0


def test_feedback_record_command_normalises_and_stores(db, database_url, racor, monkeypatch,
                                                       capsys):
    yacht, keys = racor
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = main(["feedback", "record", "--org", ORG, "--yacht", str(yacht.id), "--user", USER,
                 "--query", "  Oil   FILTER ", "--object-type", keys[0][0],
                 "--object-id", str(keys[0][1]), "--position", "2"])
    assert code == 0 and "recorded click" in capsys.readouterr().out
    with db.cursor() as cur:
        cur.execute("SELECT query_text, query_normalized, click_position "
                    "FROM search_click_events")
        assert cur.fetchone() == ("  Oil   FILTER ", "oil filter", 2)
    assert main(["feedback", "record", "--org", ORG, "--yacht", str(yacht.id), "--user",
                 USER, "--query", "bad\x00query", "--object-type", keys[0][0],
                 "--object-id", str(keys[0][1])]) == 2
    assert "control character" in capsys.readouterr().err
