"""The job runner: Jobs created through the API run as local processes and report back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client as k

from f1sandbox.jobrunner import JobRunner
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def python_job(name: str, code: str, **spec) -> dict:
    container = {
        "name": "main",
        "image": "f1cortex/worker:test",
        "command": [sys.executable, "-c", textwrap.dedent(code)],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": spec.pop("backoffLimit", 0),
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [container], **spec.pop("pod", {})}
            },
            **spec,
        },
    }


@pytest.fixture
def runner(kubeconfig, tmp_path):
    with JobRunner(
        kubeconfig, tmp_path / "jobs", env={"PATH": os.environ["PATH"]}, grace_period=5
    ) as job_runner:
        yield job_runner


def job_status(k8s, namespace, name):
    return k.BatchV1Api(k8s).read_namespaced_job_status(name, namespace).status


def condition(status, kind):
    return next((c for c in status.conditions or [] if c.type == kind), None)


def finished(k8s, namespace, name):
    status = job_status(k8s, namespace, name)
    done = condition(status, "Complete") or condition(status, "Failed")
    return status if done is not None and done.status == "True" else None


def test_a_successful_job_completes(k8s, runner, namespace):
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace, python_job("ok", "print('hello from the job')")
    )
    status = wait_for(lambda: finished(k8s, namespace, "ok"), 15)
    assert status.succeeded == 1
    assert status.active is None
    assert status.start_time is not None and status.completion_time is not None
    assert condition(status, "Complete").status == "True"
    assert printed(runner, namespace, "ok", "hello from the job")


def test_a_failing_job_is_retried_up_to_the_backoff_limit(k8s, runner, namespace):
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace, python_job("broken", "import sys; print('attempt'); sys.exit(3)", backoffLimit=1)
    )
    status = wait_for(lambda: finished(k8s, namespace, "broken"), 15)
    failed = condition(status, "Failed")
    assert failed.status == "True"
    assert failed.reason == "BackoffLimitExceeded"
    assert status.failed == 2
    assert status.succeeded is None
    assert len(runner.pids(namespace, "broken")) == 2
    assert runner.log_path(namespace, "broken").read_text().count("exit code 3") == 2


def test_env_from_secrets_config_maps_and_the_downward_api(k8s, runner, namespace):
    core = k.CoreV1Api(k8s)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"dsn": "postgresql://x"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "tuning"}, "data": {"BATCH": "64"}}
    )
    code = """
        import json, os
        keys = ['DSN', 'BATCH', 'POD', 'NS', 'PLAIN', 'LINK']
        print(json.dumps({key: os.environ.get(key) for key in keys}))
    """
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace,
        python_job(
            "env",
            code,
            container={
                "envFrom": [{"configMapRef": {"name": "tuning"}}],
                "env": [
                    {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "dsn"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "PLAIN", "value": "yes"},
                    {"name": "LINK", "value": "$(PLAIN)-$(BATCH)"},
                ],
            },
        ),
    )
    assert wait_for(lambda: finished(k8s, namespace, "env"), 15).succeeded == 1
    line = next(
        ln
        for ln in runner.log_path(namespace, "env").read_text().splitlines()
        if ln.startswith("{")
    )
    seen = json.loads(line)
    assert seen["DSN"] == "postgresql://x"
    assert seen["BATCH"] == "64"
    assert seen["POD"].startswith("env-") and seen["NS"] == namespace
    assert (seen["PLAIN"], seen["LINK"]) == ("yes", "yes-64")


def test_a_job_waits_for_its_secret(k8s, runner, namespace):
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace,
        python_job(
            "waits",
            "import os; print(os.environ['TOKEN'])",
            container={
                "env": [
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}
                ]
            },
        ),
    )
    log = runner.log_path(namespace, "waits")
    wait_for(lambda: "CreateContainerConfigError" in log.read_text(), 10)
    k.CoreV1Api(k8s).create_namespaced_secret(
        namespace, {"metadata": {"name": "late"}, "stringData": {"t": "arrived"}}
    )
    assert wait_for(lambda: finished(k8s, namespace, "waits"), 15).succeeded == 1
    assert "arrived" in log.read_text()


def printed(runner: JobRunner, namespace: str, name: str, line: str) -> bool:
    """Whether the Job's process printed ``line`` (the runner's own lines quote the code)."""
    text = runner.log_path(namespace, name).read_text()
    return line in text.splitlines() and bool(runner.pids(namespace, name))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


SLEEPER = """
    import pathlib, signal, sys, time
    def stop(*_):
        pathlib.Path(sys.argv[1]).write_text('terminated')
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print('running', flush=True)
    time.sleep(60)
"""


def test_deleting_a_job_terminates_its_process(k8s, runner, namespace, tmp_path):
    marker = tmp_path / "marker"
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace, python_job("sleeper", SLEEPER, container={"args": [str(marker)]})
    )
    wait_for(lambda: printed(runner, namespace, "sleeper", "running"), 10)
    assert job_status(k8s, namespace, "sleeper").active == 1
    pid = runner.pids(namespace, "sleeper")[0]
    k.BatchV1Api(k8s).delete_namespaced_job("sleeper", namespace)
    wait_for(lambda: not alive(pid), 10)
    assert marker.read_text() == "terminated"  # SIGTERM first, as a kubelet does


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(k8s, runner, namespace):
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('stubborn', flush=True)
        time.sleep(60)
    """
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace, python_job("stubborn", code, pod={"terminationGracePeriodSeconds": 1})
    )
    wait_for(lambda: printed(runner, namespace, "stubborn", "stubborn"), 10)
    pid = runner.pids(namespace, "stubborn")[0]
    k.BatchV1Api(k8s).delete_namespaced_job("stubborn", namespace)
    wait_for(lambda: not alive(pid), 5)


def test_owner_deletion_garbage_collects_the_job_and_kills_it(k8s, runner, namespace, tmp_path):
    owner = k.CoreV1Api(k8s).create_namespaced_config_map(
        namespace, {"metadata": {"name": "owner"}}
    )
    body = python_job("owned", SLEEPER, container={"args": [str(tmp_path / "marker")]})
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    k.BatchV1Api(k8s).create_namespaced_job(namespace, body)
    wait_for(lambda: printed(runner, namespace, "owned", "running"), 10)
    pid = runner.pids(namespace, "owned")[0]
    k.CoreV1Api(k8s).delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: not alive(pid), 10)


def test_active_deadline_kills_the_job(k8s, runner, namespace, tmp_path):
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace,
        python_job(
            "slow", SLEEPER, activeDeadlineSeconds=1, container={"args": [str(tmp_path / "marker")]}
        ),
    )
    status = wait_for(lambda: finished(k8s, namespace, "slow"), 15)
    assert condition(status, "Failed").reason == "DeadlineExceeded"
    assert not alive(runner.pids(namespace, "slow")[0])


def test_suspend_and_resume(k8s, runner, namespace):
    batch = k.BatchV1Api(k8s)
    batch.create_namespaced_job(namespace, python_job("later", "print('resumed')", suspend=True))

    def suspended():
        found = condition(job_status(k8s, namespace, "later"), "Suspended")
        return found is not None and found.status == "True"

    wait_for(suspended, 10)
    assert runner.pids(namespace, "later") == []
    batch.patch_namespaced_job("later", namespace, {"spec": {"suspend": False}})
    status = wait_for(lambda: finished(k8s, namespace, "later"), 15)
    assert status.succeeded == 1
    assert condition(status, "Suspended").status == "False"


def test_ttl_after_finished_deletes_the_job(k8s, runner, namespace):
    k.BatchV1Api(k8s).create_namespaced_job(
        namespace, python_job("short-lived", "pass", ttlSecondsAfterFinished=0)
    )

    def gone():
        return not k.BatchV1Api(k8s).list_namespaced_job(namespace).items

    wait_for(gone, 15)
    assert len(runner.pids(namespace, "short-lived")) == 1


def test_rewrite_hook_maps_the_image_entrypoint(kubeconfig, k8s, namespace, tmp_path):
    def rewrite(argv, env, job):
        env["MAPPED"] = "yes"
        if argv[:1] == ["f1backfill"]:
            return [
                sys.executable,
                "-c",
                'import os, sys; print(os.environ["MAPPED"], sys.argv[1:])',
                *argv[1:],
            ]
        return argv

    with JobRunner(kubeconfig, tmp_path / "jobs", rewrite=rewrite) as runner:
        k.BatchV1Api(k8s).create_namespaced_job(
            namespace,
            python_job(
                "mapped", "", container={"command": ["f1backfill"], "args": ["worker", "--once"]}
            ),
        )
        assert wait_for(lambda: finished(k8s, namespace, "mapped"), 15).succeeded == 1
        assert "yes ['worker', '--once']" in runner.log_path(namespace, "mapped").read_text()


def test_standalone_runner_process(kubeconfig, k8s, namespace, tmp_path):
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("f1sandbox")),
            "jobrunner",
            f"--kubeconfig={kubeconfig}",
            f"--workdir={tmp_path / 'jobs'}",
            f"--namespace={namespace}",
            f"--env=PATH={os.environ['PATH']}",
            f"--map-command=worker={sys.executable} -c",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["server"].startswith("http://127.0.0.1")
        k.BatchV1Api(k8s).create_namespaced_job(
            namespace,
            python_job(
                "cli", "", container={"command": ["worker"], "args": ['print("via the CLI")']}
            ),
        )
        assert wait_for(lambda: finished(k8s, namespace, "cli"), 15).succeeded == 1
        log = (tmp_path / "jobs" / f"{namespace}.cli.log").read_text()
        assert "via the CLI" in log.splitlines()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_suspending_a_running_job_stops_it_and_resuming_runs_it_again(
    kubeapi, k8s, namespace, tmp_path
):
    batch = k.BatchV1Api(k8s)
    # The runner also takes a bare URL (no kubeconfig needed).
    with JobRunner(kubeapi.url, tmp_path / "jobs", env={"PATH": os.environ["PATH"]}) as runner:
        batch.create_namespaced_job(
            namespace,
            python_job("pausable", SLEEPER, container={"args": [str(tmp_path / "marker")]}),
        )
        wait_for(lambda: printed(runner, namespace, "pausable", "running"), 10)
        first = runner.pids(namespace, "pausable")[0]
        batch.patch_namespaced_job("pausable", namespace, {"spec": {"suspend": True}})

        def suspended():
            status = job_status(k8s, namespace, "pausable")
            found = condition(status, "Suspended")
            return found is not None and found.status == "True" and not status.active

        wait_for(suspended, 10)
        assert not alive(first)
        batch.patch_namespaced_job("pausable", namespace, {"spec": {"suspend": False}})
        wait_for(lambda: len(runner.pids(namespace, "pausable")) == 2, 10)
        assert job_status(k8s, namespace, "pausable").active == 1
        assert condition(job_status(k8s, namespace, "pausable"), "Suspended").status == "False"
