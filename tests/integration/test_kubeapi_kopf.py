"""A real ``kopf run`` process against the emulator: create, status, events, finalizers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client as k

from tests.support.kubeapi_fixtures import (
    GROUP,
    PEERING_CRDS,
    PLURAL,
    VERSION,
    yacht_backfill,
)
from tests.support.waiting import wait_for

OPERATOR = textwrap.dedent("""
    from pathlib import Path

    import kopf

    DELETED = Path(__file__).with_name('deleted.txt')


    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.finalizer = 'f1cortex.io/test-operator'
        # Short timeouts keep a stopped test quick; kopf#860 explains why they matter.
        settings.watching.server_timeout = 30
        settings.watching.client_timeout = 40
        settings.networking.error_backoffs = [0.2, 0.5]


    @kopf.on.create('f1cortex.io', 'v1alpha1', 'yachtbackfills')
    def admit(body, spec, patch, **_):
        patch.status['phase'] = 'Admitted'
        patch.status['effectivePriority'] = spec.get('priority', 10)
        kopf.info(body, reason='Admitted', message=f"admitted {spec['yachtName']}")


    @kopf.on.delete('f1cortex.io', 'v1alpha1', 'yachtbackfills')
    def release(name, **_):
        DELETED.write_text(name)
""")


@contextlib.contextmanager
def running_operator(kubeconfig: Path, workdir: Path, *options: str):
    """``kopf run`` of the tiny operator as a subprocess, logging to workdir/kopf.log."""
    # Not operator.py: that name would shadow the standard library's module.
    source = workdir / "tiny_operator.py"
    source.write_text(OPERATOR)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with (workdir / "kopf.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--verbose", *options, str(source)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def operator(kubeconfig, namespace, crd, tmp_path):
    with running_operator(
        kubeconfig, tmp_path, "--standalone", f"--namespace={namespace}"
    ) as process:
        yield process, tmp_path


def kopf_log(tmp_path: Path) -> str:
    return (tmp_path / "kopf.log").read_text()[-4000:]


def running(process: subprocess.Popen, workdir: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"kopf exited with {process.returncode}:\n{kopf_log(workdir)}")
    return True


def test_kopf_operator_end_to_end(operator, k8s, kubeapi, kubectl, namespace):
    process, workdir = operator
    api = k.CustomObjectsApi(k8s)
    wait_for(
        lambda: running(process, workdir) and kubeapi.watch_count(PLURAL) >= 1,
        20,
        message=lambda: f"kopf never watched {PLURAL}:\n{kopf_log(workdir)}",
    )
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill("alpha", namespace, priority=70)
    )

    def admitted():
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "alpha")
        return obj if obj.get("status", {}).get("phase") == "Admitted" else None

    obj = wait_for(admitted, 20, message=lambda: kopf_log(workdir))
    assert obj["status"]["effectivePriority"] == 70
    assert "f1cortex.io/test-operator" in obj["metadata"]["finalizers"]
    assert obj["metadata"]["generation"] == 1  # kopf's writes were not spec changes

    def posted_event():
        events = (
            k.CoreV1Api(k8s)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=alpha")
            .items
        )
        return [e for e in events if "admitted Alpha" in (e.message or "")]

    event = wait_for(posted_event, 10, message=lambda: kopf_log(workdir))[0]
    assert event.reason == "Admitted"
    assert event.involved_object.uid == obj["metadata"]["uid"]
    assert event.metadata.name.startswith("kopf-event-")
    assert "Admitted" in kubectl("get", "yb", "-n", namespace).stdout

    kubectl("delete", "yb", "alpha", "-n", namespace, "--timeout=20s")
    assert (workdir / "deleted.txt").read_text() == "alpha"
    assert kubeapi.objects(PLURAL, namespace) == []


def test_kopf_peering_through_the_emulator(kubeapi, kubeconfig, crd, namespace, tmp_path):
    kubeapi.load_crd(PEERING_CRDS)  # the peering CRDs the product ships
    kubeapi.create(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "default", "namespace": namespace},
        }
    )

    def peers():
        return (kubeapi.get("kopfpeerings", "default", namespace) or {}).get("status")

    with running_operator(
        kubeconfig, tmp_path, "--peering=default", f"--namespace={namespace}"
    ) as process:
        status = wait_for(
            lambda: running(process, tmp_path) and peers(), 20, message=lambda: kopf_log(tmp_path)
        )
        ((identity, record),) = status.items()
        assert record["lifetime"] > 0 and record["lastseen"]
        kubeapi.create(yacht_backfill("alpha", namespace))
        wait_for(
            lambda: kubeapi.get(PLURAL, "alpha", namespace).get("status"),
            20,
            message=lambda: kopf_log(tmp_path),
        )
    # On exit, the operator removes itself from the peering object.
    assert identity not in (peers() or {})
