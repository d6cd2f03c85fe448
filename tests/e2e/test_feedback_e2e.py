"""The click-feedback (self-healing) loop and dead-letter replay, through the operator.

clicks -> `feedback learn` -> rows re-queued -> a Continuous backfill re-admitted ->
re-embedded -> the clicked object ranks higher for the query. And kubectl-driven replay of
dead letters: once per annotation value, with an Event.
"""

from __future__ import annotations

import uuid

from f1backfill.config import FeedbackSettings
from f1backfill.feedback import learn, record_click, search_rank
from f1backfill.worker.providers import HashProvider
from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.stack import backfill
from tests.support.waiting import wait_for


def rank_of(db, yacht, object_id, query: str) -> int:
    """Where `object_id` ranks for `query`, embedded as the workers embed (hash provider)."""
    return search_rank(db, str(yacht.id), object_id, HashProvider(1536).embed([query]).vectors[0])


def test_clicks_teach_a_continuous_backfill_and_the_clicked_object_ranks_higher(stack,
                                                                               stack_db):
    yacht = add_yacht(stack_db, "Learner", "premium")
    keys = add_rows(stack_db, yacht.id, 40, seed=5, max_chars=400)
    target_type, target = keys[17]
    stack.apply(backfill("learner", yacht.id, mode="Continuous", batchSleepSeconds=0,
                         embedding={"provider": "hash"}))
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("learner") == "Succeeded", timeout=60)
    before = rank_of(stack_db, yacht, target, "mtu filtr")

    org, user = str(uuid.uuid4()), str(uuid.uuid4())
    for position in (4, 5, 6):  # found it, but low in the list
        record_click(stack_db, org_id=org, yacht_id=str(yacht.id), user_id=user,
                     query_text="MTU filtr", object_type=target_type,
                     object_id=str(target), position=position)
    result = learn(FeedbackSettings.from_env({}, database_url=stack.database_url))
    assert result.total_terms == 1

    # Continuous: new work for the yacht -> admitted again, without a person.
    wait_for(lambda: stack.status("learner").get("admissions") == 2
             and stack.phases()["learner"] == "Succeeded", timeout=60,
             message=lambda: f"{stack.status('learner')}")
    assert status_counts(stack_db, yacht.id) == {"embedded": 40}
    after = rank_of(stack_db, yacht, target, "mtu filtr")
    assert after < before
    assert after == 1


def test_the_replay_annotation_replays_dead_letters_once_per_value(stack, stack_db):
    yacht = add_yacht(stack_db, "Replayer", "standard")
    texts = [f"row {n} about the davit" for n in range(10)] + [f"FLAKY {n}" for n in range(5)]
    add_rows(stack_db, yacht.id, len(texts), texts=texts)
    stack.fake.poison("FLAKY")
    stack.apply(backfill("replayer", yacht.id, batchSleepSeconds=0))
    stack.start_runner()
    stack.start_operator(DLQ_WARNING_THRESHOLD="3", DLQ_CRITICAL_THRESHOLD="100")
    wait_for(lambda: stack.phases().get("replayer") == "Succeeded"
             and stack.status("replayer")["dlq"]["unresolved"] == 5, timeout=60)
    growing = next(c for c in stack.status("replayer")["conditions"]
                   if c["type"] == "DLQGrowing")
    assert growing["status"] == "True"

    stack.fake.clear_faults()  # the provider was fixed
    annotate = {"metadata": {"annotations": {"f1cortex.io/replay-dead-letters": "fix-1"}}}
    stack.api.patch("yachtbackfills", "replayer", annotate, namespace="fleet")
    wait_for(lambda: stack.status("replayer").get("admissions") == 2
             and stack.phases()["replayer"] == "Succeeded"
             and stack.status("replayer")["dlq"]["unresolved"] == 0, timeout=60,
             message=lambda: f"{stack.status('replayer')}")
    assert status_counts(stack_db, yacht.id) == {"embedded": 15}
    assert stack.status("replayer")["dlq"]["replayed"] == "fix-1"
    growing = next(c for c in stack.status("replayer")["conditions"]
                   if c["type"] == "DLQGrowing")
    assert growing["status"] == "False"
    wait_for(lambda: "DLQRecovered" in [e["reason"] for e in stack.events("replayer")],
             timeout=10)
    reasons = [e["reason"] for e in stack.events("replayer")]
    assert reasons.count("DeadLettersReplayed") == 1

    # The same value again: nothing happens. A new value: acted on (nothing left).
    stack.api.patch("yachtbackfills", "replayer", {"metadata": {"labels": {"touch": "1"}}},
                    namespace="fleet")
    stack.api.patch("yachtbackfills", "replayer", {"metadata": {"annotations": {
        "f1cortex.io/replay-dead-letters": "fix-2"}}}, namespace="fleet")
    wait_for(lambda: [e["reason"] for e in stack.events("replayer")].count(
        "DeadLettersReplayed") == 2, timeout=20)
    assert stack.status("replayer")["dlq"]["replayed"] == "fix-2"
    assert stack.status("replayer")["admissions"] == 2  # nothing to re-embed, no new Job
