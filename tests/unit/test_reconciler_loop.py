"""The reconciler's loop: what wakes the next tick, and how soon (its ticks replaced by a
recorder; the timer is a minute, so only a wake-up can start a tick within the test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from f1backfill.config import OperatorSettings
from f1backfill.controller.metrics import OperatorMetrics
from f1backfill.controller.observe import observe_backfill, observe_job
from f1backfill.controller.reconciler import BURST_SECONDS, Reconciler
from tests.support.backfills import backfill_body, job_body

COMPLETE = {"succeeded": 1, "conditions": [
    {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}


def seconds_between_ticks(during_first_tick: Callable[[Reconciler], None]) -> float:
    """Runs the loop for two ticks; `during_first_tick` happens while the first one runs."""
    reconciler = Reconciler(OperatorSettings(tick_seconds=60), kube=None, db=None,
                            metrics=OperatorMetrics(), gate=None)
    started: list[float] = []

    async def main() -> None:
        stopped = asyncio.Event()

        async def tick_once() -> float:
            started.append(time.monotonic())
            if len(started) == 1:
                during_first_tick(reconciler)
                await asyncio.sleep(0.01)  # the event lands while the tick still runs
            else:
                stopped.set()
                reconciler.wake()  # out of the wait, and out of the loop
            return reconciler.settings.tick_seconds

        reconciler._tick_once = tick_once
        await asyncio.wait_for(reconciler._loop(stopped), timeout=5)

    asyncio.run(main())
    return started[1] - started[0]


def a_job_ends(reconciler: Reconciler) -> None:
    owner = observe_backfill(backfill_body(uid="u1"))
    job = observe_job(job_body(owner, 1, COMPLETE))
    reconciler.cache.jobs.seen((job.namespace, job.name), job)


def a_backfill_changes(reconciler: Reconciler) -> None:
    reconciler.cache.backfills.seen("u1", observe_backfill(backfill_body(uid="u1")))


def test_a_job_that_ends_during_a_tick_starts_the_next_one_at_once():
    assert seconds_between_ticks(a_job_ends) < BURST_SECONDS


def test_any_other_change_during_a_tick_starts_the_next_after_the_burst_wait():
    waited = seconds_between_ticks(a_backfill_changes)
    assert BURST_SECONDS <= waited < 1.0  # not the minute of the timer: the wake is kept
