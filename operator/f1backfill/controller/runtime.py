"""Everything the operator process holds: settings, clients, the reconciler, its task.

Built once by the `operator` command before kopf starts and handed to kopf as its `memo`;
kopf's startup handler calls `configure_kopf` and `start_background`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field

import kopf
from prometheus_client import start_http_server

from ..config import OperatorSettings
from ..db.fleet import FleetDatabase
from .kube import Kube, load_config
from .metrics import OperatorMetrics
from .peering import PEERING_LIFETIME, PeeringGate
from .reconciler import Reconciler

log = logging.getLogger(__name__)


def configure_kopf(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    """kopf tuned deliberately; every value says why."""
    # kopf#860: without a server-side timeout a watch can stall silently for hours when a
    # connection half-dies; re-establish every few minutes, and give up on a silent
    # connection a little after the server should have closed it.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # kopf handles no resource of ours (the informers bring them), so it never writes a
    # finalizer, progress or a diff-base annotation: persistence needs no tuning. Should a
    # resource handler come back, set them under our group (kopf#1087: progress kept in
    # status grows with every handler).
    # The reconciler posts one Event per transition itself; kopf's per-handler INFO events
    # would bury them. Warnings and errors of kopf still reach `kubectl describe`.
    settings.posting.level = logging.WARNING
    # Peering: replicas get distinct random priorities (see Runtime), so exactly one is
    # active and another takes over when it stops renewing (60 s lifetime).
    settings.peering.lifetime = PEERING_LIFETIME
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
        kube = Kube()
        # A fresh identity and priority per process: replicas never tie (a tie would pause
        # both, kopf's rule for equal priorities).
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{secrets.token_hex(4)}"
        priority = secrets.randbelow(2**31 - 2) + 1
        metrics = OperatorMetrics()
        gate = PeeringGate(kube, settings, identity, priority)
        reconciler = Reconciler(settings, kube, FleetDatabase(settings.database_url), metrics,
                                gate)
        reconciler.watch(kube, settings.namespaces)
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
