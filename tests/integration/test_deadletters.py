"""Dead-letter operations: list, retry and abandon round trips, each idempotent."""

from __future__ import annotations

import pytest

from f1backfill.cli import main
from f1backfill.config import WorkerSettings
from f1backfill.db.deadletters import abandon, list_dead_letters, retry
from f1backfill.worker.loop import Worker
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht, status_counts


def run_worker(database_url, yacht, fake, **overrides):
    values = dict(yacht_id=str(yacht.id), database_url=database_url, provider="openai",
                  openai_api_key="sk-test", openai_base_url=fake.base_url,
                  prometheus_port=0, batch_sleep_sec=0.0, max_in_flight=1)
    values.update(overrides)
    return Worker(WorkerSettings.from_env({}, **values)).run()


@pytest.fixture
def dead(db, database_url):
    """Two yachts with dead letters: 3 invalid_input on one, 2 empty_text on the other."""
    with FakeOpenAI() as fake:
        first, second = add_yacht(db, "First"), add_yacht(db, "Second")
        add_rows(db, first.id, 5, texts=["good one", "good two", "BAD a", "BAD b", "BAD c"])
        add_rows(db, second.id, 3, texts=["fine", "\x07", "  "])
        fake.poison("BAD")
        run_worker(database_url, first, fake)
        run_worker(database_url, second, fake)
    return first, second


def test_list_filters_by_yacht_and_code(db, dead):
    first, _ = dead
    assert len(list_dead_letters(db)) == 5
    assert {d.error_code for d in list_dead_letters(db, yacht_id=str(first.id))} == \
        {"invalid_input"}
    assert len(list_dead_letters(db, code="empty_text")) == 2


def test_retry_requeues_once_and_resolves_as_retry_success_when_embedded(db, database_url,
                                                                        dead):
    first, _ = dead
    assert retry(db, yacht_id=str(first.id)) == {str(first.id): 3}
    assert retry(db, yacht_id=str(first.id)) == {}  # idempotent
    assert status_counts(db, first.id) == {"embedded": 2, "queued": 3}
    with FakeOpenAI() as fake:  # the provider accepts them now
        run_worker(database_url, first, fake)
    assert status_counts(db, first.id) == {"embedded": 5}
    letters = list_dead_letters(db, yacht_id=str(first.id), include_resolved=True)
    assert {d.resolution_type for d in letters} == {"retry_success"}
    assert list_dead_letters(db, yacht_id=str(first.id)) == []


def test_a_retry_that_fails_again_stays_in_the_dead_letter_table(db, database_url, dead):
    _, second = dead
    retry(db, yacht_id=str(second.id))
    with FakeOpenAI() as fake:
        run_worker(database_url, second, fake)
    letters = list_dead_letters(db, yacht_id=str(second.id))
    assert len(letters) == 2 and {d.resolved_at for d in letters} == {None}


def test_abandon_resolves_once_and_leaves_the_rows_unembedded(db, dead):
    first, second = dead
    assert abandon(db, code="invalid_input") == {str(first.id): 3}
    assert abandon(db, code="invalid_input") == {}
    assert status_counts(db, first.id) == {"embedded": 2, "dlq": 3}
    assert [d.yacht_id for d in list_dead_letters(db)] == [second.id, second.id]
    assert retry(db, yacht_id=str(first.id)) == {}  # abandoned ones are not retried


def test_dlq_commands_print_tables_and_counts(db, database_url, dead, monkeypatch, capsys):
    first, _ = dead
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["dlq", "list", "--code", "invalid_input"]) == 0
    out = capsys.readouterr().out
    assert out.count("invalid_input") == 3 and "3 dead letters" in out
    assert main(["dlq", "retry", "--yacht", str(first.id)]) == 0
    assert "re-queued 3 dead letters" in capsys.readouterr().out
    assert main(["dlq", "abandon"]) == 0
    assert "abandoned 2 dead letters" in capsys.readouterr().out
