"""The operator's peering gate agrees with kopf itself: real `kopf run` replicas against the
emulator pause and resume by kopf's rule, and `PeeringGate` reads the peering object they
write the same way, and writes its own announcement so that kopf reads it. This pins kopf's
undocumented peering format: a kopf release that changes it (or the rule) fails here, not
silently in a cluster with two replicas."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from f1backfill.config import OperatorSettings
from f1backfill.controller.kube import Kube
from f1backfill.controller.peering import PeeringGate
from tests.support.kubeapi_fixtures import PEERING_CRDS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

PEERING = "f1backfill"
LIFETIME = 4  # seconds: a replica that stops renewing is dead this long after its last sign

REPLICA = textwrap.dedent("""
    import os

    import kopf


    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.peering.lifetime = int(os.environ["PEERING_LIFETIME"])
        settings.networking.error_backoffs = [0.2, 0.5]
""")


class Replica:
    """One `kopf run` process in the peering, with its identity and priority."""

    def __init__(self, identity: str, priority: int, process: subprocess.Popen,
                 log: Path) -> None:
        self.identity = identity
        self.priority = priority
        self.process = process
        self.log = log

    def said(self, text: str, after: str = "") -> bool:
        """Whether kopf logged `text` (after the first line holding `after`)."""
        if self.process.poll() is not None and self.process.returncode not in (0, -9):
            pytest.fail(f"kopf {self.identity} exited: {self.log.read_text()[-3000:]}")
        log = self.log.read_text()
        return after in log and text in log[log.index(after):]


@pytest.fixture
def replicas(kubeapi, kubeconfig, namespace, tmp_path) -> Iterator:
    kubeapi.load_crd(PEERING_CRDS)
    kubeapi.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                    "metadata": {"name": PEERING, "namespace": namespace}})
    source = tmp_path / "replica.py"
    source.write_text(REPLICA)
    started: list[Replica] = []

    def start(identity: str, priority: int) -> Replica:
        log = tmp_path / f"{identity}.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": identity,
               "PEERING_LIFETIME": str(LIFETIME)}
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--verbose", f"--namespace={namespace}",
                 f"--peering={PEERING}", f"--priority={priority}", str(source)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        replica = Replica(identity, priority, process, log)
        started.append(replica)
        wait_for(lambda: identity in peers(), 20,
                 message=lambda: f"{identity} never joined: {log.read_text()[-3000:]}")
        return replica

    def peers() -> dict:
        return (kubeapi.get("kopfpeerings", PEERING, namespace) or {}).get("status") or {}

    yield start, peers
    for replica in started:
        with contextlib.suppress(ProcessLookupError):
            replica.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            replica.process.wait(10)
        if replica.process.poll() is None:
            replica.process.kill()
            replica.process.wait()


@pytest.fixture
def gate_of(kubeapi, kubeconfig, namespace) -> Iterator:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api=client)
    settings = OperatorSettings(namespaces=(namespace,), peering_name=PEERING)
    yield lambda replica: PeeringGate(kube, settings, replica.identity, replica.priority)
    client.close()


def test_the_gate_follows_kopfs_pause_and_resume(replicas, gate_of):
    start, peers = replicas
    low = start("low", 100)
    assert gate_of(low).active()

    high = start("high", 200)
    wait_for(lambda: low.said("Pausing operations in favour of"), 20,
             message=lambda: low.log.read_text()[-3000:])
    assert not gate_of(low).active()
    assert gate_of(high).active()
    assert not high.said("Pausing")
    record = peers()["high"]
    assert set(record) >= {"priority", "lifetime", "lastseen"}
    assert (record["priority"], record["lifetime"]) == (200, LIFETIME)

    # Killed, not stopped: its record stays until it is older than its lifetime.
    high.process.send_signal(signal.SIGKILL)
    high.process.wait()
    assert "high" in peers()
    assert not gate_of(low).active()
    # kopf also says "Resuming" once at its start (it starts paused until peering is read).
    wait_for(lambda: low.said("Resuming operations after the pause", after="Pausing"),
             5 * LIFETIME, message=lambda: low.log.read_text()[-3000:])
    assert gate_of(low).active()


def test_equal_priorities_pause_both_in_kopf_and_in_the_gate(replicas, gate_of):
    start, _ = replicas
    first = start("first", 100)
    second = start("second", 100)
    # The first one was serving and pauses; the second one starts paused and stays so.
    wait_for(lambda: first.said("Pausing all operators, including self"), 20,
             message=lambda: first.log.read_text()[-3000:])
    wait_for(lambda: second.said("Possibly conflicting operators with the same priority"),
             20, message=lambda: second.log.read_text()[-3000:])
    assert not second.said("Resuming operations",
                           after="Possibly conflicting operators with the same priority")
    assert not gate_of(first).active()
    assert not gate_of(second).active()


def test_a_replica_kopf_has_not_announced_yet_announces_itself_in_kopfs_format(replicas,
                                                                               gate_of):
    start, peers = replicas
    only = start("only", 100)
    newcomer = Replica("newcomer", 500, only.process, only.log)
    assert gate_of(newcomer).active()  # announced, and no live peer above it
    record = peers()["newcomer"]
    assert (record["priority"], record["lifetime"]) == (500, 60)
    # kopf reads the announcement as one of its own peers' keep-alives.
    wait_for(lambda: only.said("Pausing operations in favour of [<Peer newcomer"), 20,
             message=lambda: only.log.read_text()[-3000:])
    assert not gate_of(only).active()


def test_a_replica_stopped_gracefully_leaves_the_peering_at_once(replicas, gate_of):
    start, peers = replicas
    low = start("low", 100)
    high = start("high", 200)
    wait_for(lambda: not gate_of(low).active(), 20)
    high.process.terminate()
    high.process.wait(10)
    assert "high" not in peers()
    assert gate_of(low).active()
