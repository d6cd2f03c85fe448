"""The reconciler's cache of observed backfills and Jobs: what writes, lists and watch events
leave in it."""

from __future__ import annotations

from f1backfill.admission import Verdict
from f1backfill.api import Phase
from f1backfill.builders.status import Thresholds, build_status
from f1backfill.controller.fleetcache import FleetCache
from f1backfill.controller.observe import observe_backfill, observe_job
from f1backfill.db.figures import YachtFigures
from tests.support.backfills import T0, backfill_body, job_body

QUEUED = Verdict(phase=Phase.QUEUED, queue_position=1, reason="Queued", message="waiting")


def written_status():
    """A status as the reconciler builds it, and the body the API server answers with."""
    observed = observe_backfill(backfill_body())
    status, _ = build_status(observed, QUEUED, YachtFigures(total=3, queued=3), rate=None,
                             drift=None, thresholds=Thresholds(100, 1000), job_name=None,
                             now=T0)
    return status, backfill_body(status=status.to_dict())


def test_after_a_status_write_the_cache_keeps_the_status_object_it_sent():
    cache = FleetCache()
    status, response = written_status()
    cache.apply_backfill(response, written=status)
    (cached,) = cache.backfills.values()
    assert cached.status is status  # one copy for the fleet, not two


def test_a_response_that_reads_otherwise_wins_over_the_status_sent():
    cache = FleetCache()
    status, response = written_status()
    response["status"]["queuePosition"] = 7  # someone else wrote in between
    cache.apply_backfill(response, written=status)
    (cached,) = cache.backfills.values()
    assert cached.status is not status and cached.status.queue_position == 7


def test_a_namespace_list_replaces_that_namespace_only():
    cache = FleetCache()
    for name, namespace, uid in (("kept", "fleet", "u1"), ("gone", "fleet", "u2"),
                                 ("elsewhere", "other", "u3")):
        cache.backfills.seen(uid, observe_backfill(backfill_body(name, namespace, uid=uid)))
    listed = observe_backfill(backfill_body("new", "fleet", uid="u4"))
    cache.backfills.listed("fleet", {"u1": cache.backfills["u1"], "u4": listed})
    assert sorted(b.name for b in cache.backfills.values()) == ["elsewhere", "kept", "new"]


def test_a_cluster_wide_list_replaces_everything():
    cache = FleetCache()
    cache.backfills.seen("u1", observe_backfill(backfill_body("gone", "fleet", uid="u1")))
    listed = observe_backfill(backfill_body("new", "other", uid="u2"))
    cache.backfills.listed(None, {"u2": listed})
    assert [b.name for b in cache.backfills.values()] == ["new"]


def test_every_change_an_informer_delivers_wakes_the_reconciler_and_a_repeat_does_not():
    wakes = []
    cache = FleetCache(on_change=lambda: wakes.append(1))
    backfill = observe_backfill(backfill_body("aurora", "fleet", uid="u1"))
    cache.backfills.listed("fleet", {})
    cache.backfills.seen("u1", backfill)
    cache.backfills.seen("u1", backfill)  # the same object again: nothing new
    cache.backfills.gone("u1")
    cache.backfills.gone("u1")  # already gone
    assert len(wakes) == 3


def test_jobs_are_held_by_namespace_and_name_and_listed_per_namespace():
    cache = FleetCache()
    mine = observe_job(job_body(observe_backfill(backfill_body(uid="u1"))))
    cache.jobs.listed("fleet", {("fleet", mine.name): mine})
    assert cache.jobs.known(("fleet", mine.name)) is mine
    cache.jobs.listed("other", {})
    assert list(cache.jobs) == [("fleet", mine.name)]
    cache.jobs.listed("fleet", {})
    assert not cache.jobs


COMPLETE = {"succeeded": 1, "conditions": [
    {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}


def job_version(status: dict | None, version: str, *, admission: int = 1):
    body = job_body(observe_backfill(backfill_body(uid="u1")), admission, status)
    body["metadata"]["resourceVersion"] = version
    return observe_job(body)


def test_a_job_that_ends_frees_a_slot_once():
    freed = []
    cache = FleetCache(on_freed=lambda: freed.append(1))
    running = job_version({"active": 1}, "1")
    key = (running.namespace, running.name)
    cache.jobs.seen(key, running)
    assert freed == []  # a Job that runs holds its slot
    cache.jobs.seen(key, job_version(COMPLETE, "2"))
    assert freed == [1]
    cache.jobs.seen(key, job_version(COMPLETE, "3"))  # still ended: nothing new freed
    cache.jobs.gone(key)  # a finished Job going away (its TTL) frees nothing more
    assert freed == [1]


def test_an_unfinished_job_that_goes_away_frees_its_slot():
    freed = []
    cache = FleetCache(on_freed=lambda: freed.append(1))
    running = job_version({"active": 1}, "1")
    cache.jobs.seen((running.namespace, running.name), running)
    cache.jobs.gone((running.namespace, running.name))
    assert freed == [1]
