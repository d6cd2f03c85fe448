"""The demo's summary, said for people: priorities, why Succeeded can be below 100%, what
the operator warned about."""

from __future__ import annotations

from f1sandbox.demo import (
    describe_generations,
    describe_priorities,
    explain_incomplete,
    operator_warnings,
)


def _backfill(name, phase, total, done, dlq=0, skip=()):
    return {"metadata": {"name": name},
            "spec": {"skipObjectTypes": list(skip)} if skip else {},
            "status": {"phase": phase, "dlq": {"unresolved": dlq},
                       "progress": {"total": total, "done": done, "dlq": dlq,
                                    "percent": round(done * 100 / total, 1)}}}


def test_priorities_read_as_words_not_a_python_dict():
    line = describe_priorities([
        {"metadata": {"name": "a"}, "spec": {"tier": "enterprise"}},
        {"metadata": {"name": "b"}, "spec": {"tier": "standard", "priority": 75}},
    ])
    assert line == ("Priorities by tier: enterprise 100, premium 50, standard 10; "
                    "set by spec.priority: b 75.")
    assert "{" not in describe_priorities([{"metadata": {"name": "a"}, "spec": {}}])


def test_succeeded_below_100_percent_is_explained_by_dead_letters_and_skipped_types():
    text = "\n".join(explain_incomplete([
        _backfill("aurora", "Succeeded", 1202, 1200, dlq=2),
        _backfill("marina", "Succeeded", 892, 712, dlq=2, skip=("email", "crew_document")),
        _backfill("whole", "Succeeded", 10, 10),
        _backfill("busy", "Running", 10, 5),
    ]))
    assert "Succeeded below 100%" in text
    assert "aurora" in text and "99.8%  2 dead letters" in text
    assert "2 dead letters, 178 skipped rows (email, crew_document)" in text
    assert "whole" not in text and "busy" not in text  # complete, or not done yet
    assert "`f1backfill dlq list`" in text
    assert max(len(line) for line in text.splitlines()) <= 92


def test_nothing_to_explain_when_every_backfill_is_complete():
    assert explain_incomplete([_backfill("whole", "Succeeded", 10, 10)]) == []


def test_the_operators_warnings_are_shown_once_each(tmp_path):
    log = tmp_path / "operator.log"
    log.write_text(
        "2026-01-01 12:00:00,000 WARNING f1backfill.db.fleet: drift check of t (x) failed\n"
        "2026-01-01 12:00:01,000 WARNING f1backfill.db.fleet: drift check of t (x) failed\n"
        "Traceback (most recent call last):\n"
        "2026-01-01 12:00:02,000 ERROR kopf: something broke\n")
    assert operator_warnings(log) == [
        "The operator logged 2 distinct warnings:",
        "  WARNING f1backfill.db.fleet: drift check of t (x) failed",
        "  ERROR kopf: something broke"]
    log.write_text("")
    assert operator_warnings(log) == ["The operator logged no warnings."]


def test_cache_generations_read_as_one_sentence_per_yacht():
    lines = describe_generations({"lady-marina": 9, "aurora-borealis": 14, "blue": None})
    text = " ".join(lines)
    assert text.startswith("Search cache generations (f1:gen:<yacht>")
    assert text.endswith("aurora-borealis 14, blue ?, lady-marina 9.")
    assert max(len(line) for line in lines) <= 92
    assert describe_generations({"a": None}) == [
        "Search cache generations: Redis did not answer (see the warnings below)."]
    assert describe_generations({}) == []
