"""kopf registrations only: each handler hands off to the reconciler in a line or two.

YachtBackfills are not watched through kopf but by the reconciler's informer (see
`informer.py` for why); kopf runs the operator: startup and cleanup, peering, the liveness
probe, and the watch of our Jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from ..constants import LABEL_MANAGED_BY, MANAGED_BY
from .runtime import Runtime, configure_kopf

log = logging.getLogger(__name__)

RUNTIME: Runtime | None = None  # set by the `operator` command before kopf starts


def _runtime() -> Runtime:
    assert RUNTIME is not None, "the operator command sets the runtime before kopf runs"
    return RUNTIME


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    runtime = _runtime()
    configure_kopf(settings, runtime)
    runtime.start_background()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await _runtime().stop_background()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    _runtime().reconciler.on_job(event.get("type"), body)


@kopf.on.probe(id="reconciler")
async def reconciler_probe(**_: Any) -> dict[str, Any]:
    """For the liveness endpoint: a loop stuck for many ticks fails the probe."""
    reconciler = _runtime().reconciler
    age = None if reconciler.last_tick is None else time.monotonic() - reconciler.last_tick
    limit = max(60.0, 10 * reconciler.settings.tick_seconds)
    if age is not None and age > limit and reconciler.gate_active_hint:
        raise kopf.PermanentError(f"no reconciliation for {age:.0f}s")
    await asyncio.sleep(0)
    return {"ticks": reconciler.ticks, "seconds_since_tick": age}
