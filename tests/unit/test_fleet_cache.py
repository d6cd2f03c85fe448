"""The reconciler's cache of observed backfills: what a status write and a list leave in it."""

from __future__ import annotations

from f1backfill.admission import Verdict
from f1backfill.api import Phase
from f1backfill.builders.status import Thresholds, build_status
from f1backfill.controller.observe import observe_backfill
from f1backfill.controller.reconciler import FleetCache
from f1backfill.db.figures import YachtFigures
from tests.support.backfills import T0, backfill_body

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
        cache.put_backfill(observe_backfill(backfill_body(name, namespace, uid=uid)))
    listed = observe_backfill(backfill_body("new", "fleet", uid="u4"))
    cache.replace_backfills("fleet", {"u1": cache.backfills["u1"], "u4": listed})
    assert sorted(b.name for b in cache.backfills.values()) == ["elsewhere", "kept", "new"]


def test_a_cluster_wide_list_replaces_everything():
    cache = FleetCache()
    cache.put_backfill(observe_backfill(backfill_body("gone", "fleet", uid="u1")))
    listed = observe_backfill(backfill_body("new", "other", uid="u2"))
    cache.replace_backfills(None, {"u2": listed})
    assert [b.name for b in cache.backfills.values()] == ["new"]
