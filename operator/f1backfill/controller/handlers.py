"""kopf registrations only: each handler hands off to the runtime in a line or two.

kopf runs the operator's lifecycle (startup and cleanup), peering between replicas and the
liveness probe. It watches no resource of ours: YachtBackfills and Jobs come through the
reconciler's informers (see `informer.py` for why). The `Runtime` reaches every handler
through kopf's `memo`, built by the `operator` command before kopf starts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from .runtime import Runtime, configure_kopf


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    configure_kopf(settings, runtime)
    runtime.start_background(settings)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    await runtime.stop_background()


@kopf.on.probe(id="reconciler")
async def reconciler_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """For the liveness endpoint. A replica in charge whose loop has not finished a tick
    for many tick intervals is stuck: the probe fails and the kubelet restarts it. A
    replica on standby (another is in charge) ticks nothing by design, and one backing
    off from a failure is not stuck either: both answer, saying which they are."""
    reconciler = memo.runtime.reconciler
    age = None if reconciler.last_tick is None else time.monotonic() - reconciler.last_tick
    limit = max(60.0, 10 * reconciler.settings.tick_seconds)
    if age is not None and age > limit and reconciler.active and not reconciler.failures:
        raise kopf.PermanentError(f"no reconciliation for {age:.0f}s")
    await asyncio.sleep(0)
    return {"active": reconciler.active, "ticks": reconciler.ticks,
            "seconds_since_tick": age, "failures_in_a_row": reconciler.failures}
