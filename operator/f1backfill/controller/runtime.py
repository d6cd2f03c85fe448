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
import signal
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
    _signals: asyncio.Task | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _kopf_settings: kopf.OperatorSettings | None = None

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

    def start_background(self, kopf_settings: kopf.OperatorSettings | None = None) -> None:
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, registry=self.metrics.registry)
        self._kopf_settings = kopf_settings
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self.reconciler.run(self._stopped), name="reconciler")
        self._signals = asyncio.create_task(self._hear_signals(), name="stop on signals")

    def begin_stop(self) -> None:
        """The process is asked to stop (SIGTERM, SIGINT): the reconciler and its informers
        stop now, not when kopf's cleanup comes after its own tasks. While a release is
        uninstalled, helm deletes the peering object and the RBAC around the terminating
        pod: whatever still asks the API server is refused, so nothing of ours asks any
        more, and kopf's last keep-alive into a peering object that is gone is tried once
        and reported as a debug line (its entry would expire by itself)."""
        if self._stopped.is_set():
            return
        log.info("stopping: the reconciler and the informers stop now")
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
        if self._kopf_settings is not None:
            self._kopf_settings.networking.error_backoffs = ()  # one attempt, no retries
        logging.getLogger("kopf._core.engines.peering").addFilter(_as_debug)

    async def _hear_signals(self) -> None:
        """Chain a handler of ours to kopf's for SIGTERM and SIGINT. kopf's goes through
        asyncio's wake-up fd, which a Python-level handler installed afterwards does not
        replace; so once kopf's is in place, ours is added and both are told."""
        loop = asyncio.get_running_loop()
        for _ in range(100):  # kopf installs its handlers as its tasks start
            if all(signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler)
                   for sig in STOP_SIGNALS):
                break
            await asyncio.sleep(0.05)
        else:  # not the main thread, or kopf handles no signals: its cleanup stops us
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.begin_stop))

    async def stop_background(self) -> None:
        self.begin_stop()
        for task in (self._task, self._signals):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await asyncio.to_thread(self.reconciler.db.close)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _as_debug(record: logging.LogRecord) -> bool:
    """A log filter: the record as a DEBUG one, without its traceback; kept only where
    DEBUG is logged."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    record.exc_info, record.exc_text = None, None
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
