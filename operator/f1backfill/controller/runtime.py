"""Everything the operator process holds: settings, clients, the reconciler, its task.

Built once by the `operator` command before kopf starts; kopf's startup handler calls
`configure_kopf` and `start_background`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field

import kopf
from prometheus_client import start_http_server

from ..config import OperatorSettings
from ..constants import FINALIZER, GROUP
from ..db.fleet import FleetDatabase
from .informer import BackfillInformer
from .kube import Kube, load_config
from .metrics import OperatorMetrics
from .reconciler import PeeringGate, Reconciler

log = logging.getLogger(__name__)


# The cyclic garbage collector's first threshold: 10,000 new container objects between
# young collections instead of Python's 700. A tick of a large fleet builds hundreds of
# thousands of small acyclic objects (statuses, conditions) that refcounting frees; with the
# default, each such tick also ran several full collections over the whole cache, a third
# of the first decision's time at 10,000 backfills (docs/benchmarks.md).
GC_THRESHOLD = (10_000, 10, 10)


def configure_gc() -> None:
    gc.set_threshold(*GC_THRESHOLD)


def configure_kopf(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    """kopf tuned deliberately; every value says why."""
    # kopf#860: without a server-side timeout a watch can stall silently for hours when a
    # connection half-dies; re-establish every few minutes, and give up on a silent
    # connection a little after the server should have closed it.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Our own group, not kopf.zalando.org, so `kubectl get -o yaml` shows whose they are.
    settings.persistence.finalizer = FINALIZER
    # kopf#1087: progress kept in status grows with every handler; annotations under our
    # group stay small, and our handlers (events only) keep no progress anyway.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # The reconciler posts one Event per transition itself; kopf's per-handler INFO events
    # would bury them. Warnings and errors of kopf still reach `kubectl describe`.
    settings.posting.level = logging.WARNING
    # Peering: replicas get distinct random priorities (see Runtime), so exactly one is
    # active and another takes over when it stops renewing (60 s lifetime).
    settings.peering.lifetime = 60
    settings.peering.priority = runtime.priority


@dataclass
class Runtime:
    settings: OperatorSettings
    reconciler: Reconciler
    identity: str
    priority: int
    metrics: OperatorMetrics
    _task: asyncio.Task | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(cls, settings: OperatorSettings) -> Runtime:
        load_config()
        kube = Kube(settings.namespaces)
        # A fresh identity and priority per process: replicas never tie (a tie would pause
        # both, kopf's rule for equal priorities).
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{secrets.token_hex(4)}"
        priority = secrets.randbelow(2**31 - 2) + 1
        metrics = OperatorMetrics()
        gate = PeeringGate(kube, settings, identity, priority)
        reconciler = Reconciler(settings, kube, FleetDatabase(settings.database_url), metrics,
                                gate, BackfillInformer(kube, settings.namespaces))
        return cls(settings, reconciler, identity, priority, metrics)

    def start_background(self) -> None:
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, registry=self.metrics.registry)
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self.reconciler.run(self._stopped), name="reconciler")

    async def stop_background(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.reconciler.db.close)
