"""Rotating credentials under running Jobs, as docs/RUNBOOK.md describes it.

A Job's pod reads its Secrets when it starts: a running worker keeps the key it started
with. Once that key is revoked the worker's next request fails with 401, it releases its
claimed rows and exits 2, and the Job's next pod reads the rotated Secret. Deleting a
running Job stops it the same way, and the backfill is admitted again.
"""

from __future__ import annotations

from tests.support.fleet import add_rows, add_yacht, status_counts
from tests.support.stack import backfill
from tests.support.waiting import wait_for


def _slow_backfill(stack, stack_db, name: str, rows: int = 400):
    """A Job that takes a while: 5 rows per request, 0.25 s each (about 5 s of work)."""
    stack.fake.latency = 0.25
    yacht = add_yacht(stack_db, name, "standard")
    add_rows(stack_db, yacht.id, rows, max_chars=300)
    stack.apply(backfill(name, yacht.id, batchSize=5, batchSleepSeconds=0))
    return yacht


def _embedded(stack_db, yacht) -> int:
    return status_counts(stack_db, yacht.id).get("embedded", 0)


def test_a_running_job_keeps_its_key_until_revoked_then_its_next_pod_reads_the_new_one(
        stack, stack_db):
    stack.fake.api_key = "sk-e2e"  # what the Secret holds: the only key the provider takes
    yacht = _slow_backfill(stack, stack_db, "rotating")
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("rotating") == "Running", timeout=30)
    wait_for(lambda: _embedded(stack_db, yacht), timeout=30)

    # 1. The Secret gets the new key, the old one still valid: the running pod goes on
    #    with the old key (with the new one it would be refused now).
    stack.apply({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "f1backfill-openai", "namespace": "fleet"},
                 "stringData": {"OPENAI_API_KEY": "sk-rotated"}})
    before = _embedded(stack_db, yacht)
    wait_for(lambda: _embedded(stack_db, yacht) > before + 20, timeout=30)
    job = stack.status("rotating")["jobName"]
    assert not (stack.api.get("jobs", job, namespace="fleet").get("status") or {}).get("failed")

    # 2. The old key is revoked: the worker is refused (401), releases its rows, exits 2;
    #    the Job's next pod starts with the rotated Secret and finishes the yacht.
    stack.fake.api_key = "sk-rotated"
    wait_for(lambda: stack.phases().get("rotating") == "Succeeded", timeout=90,
             message=lambda: f"{stack.status('rotating')}")
    assert status_counts(stack_db, yacht.id) == {"embedded": 400}  # none lost or dead
    status = stack.status("rotating")
    assert (status["admissions"], status["failedJobs"], status["jobName"]) == (1, 0, job)
    job_status = stack.api.get("jobs", job, namespace="fleet")["status"]
    assert (job_status["failed"], job_status["succeeded"]) == (1, 1)
    log = (stack.workdir / "jobs" / f"fleet.{job}.log").read_text()
    assert "exit code 2" in log and "exit code 0" in log


def test_deleting_a_running_job_stops_it_and_the_backfill_is_admitted_again(stack, stack_db):
    yacht = _slow_backfill(stack, stack_db, "restarted")
    stack.start_runner()
    stack.start_operator()
    wait_for(lambda: stack.phases().get("restarted") == "Running", timeout=30)
    wait_for(lambda: _embedded(stack_db, yacht), timeout=30)
    first = stack.status("restarted")["jobName"]

    stack.api.delete("jobs", first, namespace="fleet")
    wait_for(lambda: stack.phases().get("restarted") == "Succeeded", timeout=90,
             message=lambda: f"{stack.status('restarted')}")
    status = stack.status("restarted")
    assert status["admissions"] == 2 and status["jobName"] != first
    assert status_counts(stack_db, yacht.id) == {"embedded": 400}  # none lost or dead
