"""The liveness probe of the operator: fails only a replica in charge whose loop is stuck."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import kopf
import pytest

from f1backfill.config import OperatorSettings
from f1backfill.controller.handlers import reconciler_probe
from f1backfill.controller.metrics import OperatorMetrics
from f1backfill.controller.reconciler import Reconciler


def probe(*, active: bool, seconds_since_tick: float | None, failures: int = 0):
    reconciler = Reconciler(OperatorSettings(tick_seconds=5), kube=None, db=None,
                            metrics=OperatorMetrics(), gate=None)
    reconciler.active, reconciler.failures = active, failures
    if seconds_since_tick is not None:
        reconciler.last_tick = time.monotonic() - seconds_since_tick
    memo = kopf.Memo(runtime=SimpleNamespace(reconciler=reconciler))
    return asyncio.run(reconciler_probe(memo=memo))


def test_a_replica_in_charge_that_ticks_is_alive() -> None:
    assert probe(active=True, seconds_since_tick=3)["active"] is True


def test_a_replica_in_charge_stuck_for_many_ticks_fails_the_probe() -> None:
    with pytest.raises(kopf.PermanentError, match="no reconciliation for"):
        probe(active=True, seconds_since_tick=3600)


@pytest.mark.parametrize("seconds", [None, 3600], ids=["never-ticked", "demoted-long-ago"])
def test_a_replica_on_standby_answers_and_says_so(seconds: float | None) -> None:
    result = probe(active=False, seconds_since_tick=seconds)
    assert result["active"] is False


def test_a_replica_backing_off_from_failures_is_not_restarted() -> None:
    result = probe(active=True, seconds_since_tick=3600, failures=4)
    assert result["failures_in_a_row"] == 4
