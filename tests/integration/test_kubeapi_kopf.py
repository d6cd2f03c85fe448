"""A real ``kopf run`` process against the emulator: create, status, events, finalizers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client as k

from tests.support.kubeapi import wait_for
from tests.support.kubeapi.fixtures import (  # noqa: F401
    GROUP,
    PLURAL,
    VERSION,
    crd,
    k8s,
    kubeapi,
    kubeconfig,
    kubectl,
    namespace,
    yacht_backfill,
)

OPERATOR = textwrap.dedent('''
    import logging
    from pathlib import Path

    import kopf

    DELETED = Path(__file__).with_name('deleted.txt')


    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.finalizer = 'f1cortex.io/test-operator'
        settings.posting.level = logging.INFO
        # Short timeouts keep a stopped test quick; kopf#860 explains why they matter.
        settings.watching.server_timeout = 30
        settings.watching.client_timeout = 40
        settings.networking.error_backoffs = [0.2, 0.5]


    @kopf.on.create('f1cortex.io', 'v1alpha1', 'yachtbackfills')
    def admit(spec, patch, logger, **_):
        patch.status['phase'] = 'Admitted'
        patch.status['effectivePriority'] = spec.get('priority', 10)
        logger.info(f"admitted {spec['yachtName']}")  # posted as a kopf Event (INFO level)


    @kopf.on.delete('f1cortex.io', 'v1alpha1', 'yachtbackfills')
    def release(name, **_):
        DELETED.write_text(name)
''')


@pytest.fixture
def operator(kubeconfig, namespace, crd, tmp_path):
    source = tmp_path / 'operator.py'
    source.write_text(OPERATOR)
    log = (tmp_path / 'kopf.log').open('w')
    env = {**os.environ, 'KUBECONFIG': str(kubeconfig)}
    process = subprocess.Popen(
        [sys.executable, '-m', 'kopf', 'run', '--standalone', f'--namespace={namespace}',
         '--verbose', str(source)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        yield process, tmp_path
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def kopf_log(tmp_path: Path) -> str:
    return (tmp_path / 'kopf.log').read_text()[-4000:]


def test_kopf_operator_end_to_end(operator, k8s, kubeapi, kubectl, namespace):
    _, workdir = operator
    api = k.CustomObjectsApi(k8s)
    wait_for(lambda: kubeapi.watch_count(PLURAL) >= 1, 20,
             message=lambda: f'kopf never watched {PLURAL}:\n{kopf_log(workdir)}')
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, yacht_backfill('alpha', namespace, priority=70))

    def admitted():
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, 'alpha')
        return obj if obj.get('status', {}).get('phase') == 'Admitted' else None

    obj = wait_for(admitted, 20, message=lambda: kopf_log(workdir))
    assert obj['status']['effectivePriority'] == 70
    assert 'f1cortex.io/test-operator' in obj['metadata']['finalizers']
    assert obj['metadata']['generation'] == 1  # kopf's writes were not spec changes

    def posted_event():
        events = k.CoreV1Api(k8s).list_namespaced_event(
            namespace, field_selector='involvedObject.name=alpha').items
        return [e for e in events if 'admitted Alpha' in (e.message or '')]

    event = wait_for(posted_event, 10, message=lambda: kopf_log(workdir))[0]
    assert event.involved_object.uid == obj['metadata']['uid']
    assert event.metadata.name.startswith('kopf-event-')
    assert 'Admitted' in kubectl('get', 'yb', '-n', namespace).stdout

    kubectl('delete', 'yb', 'alpha', '-n', namespace, '--timeout=20s')
    assert (workdir / 'deleted.txt').read_text() == 'alpha'
    assert kubeapi.objects(PLURAL, namespace) == []
