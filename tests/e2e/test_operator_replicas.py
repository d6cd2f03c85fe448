"""The operator with kopf's peering, as the chart runs it: the peering object created after
the operator started (helm creates custom resources last), and two replicas, one in charge,
both answering their liveness probes."""

from __future__ import annotations

import json
import time
import urllib.request

from f1sandbox.localdb import free_port
from tests.support.fleet import add_rows, add_yacht
from tests.support.stack import backfill
from tests.support.waiting import wait_for

PEERING = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
           "metadata": {"name": "f1backfill"}}
WITH_PEERING = {"STANDALONE": "false", "PEERING_NAME": "f1backfill"}


def probe(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())["reconciler"]


def test_a_peering_object_created_late_delays_the_first_admission_by_a_tick(stack,
                                                                           stack_db):
    yacht = add_yacht(stack_db, "Late Peering")
    add_rows(stack_db, yacht.id, 5)
    stack.apply(backfill("late", yacht.id))
    stack.start_operator(**WITH_PEERING)
    wait_for(lambda: "waiting for the peering object ClusterKopfPeering f1backfill"
             in stack.operator_output(), 20, message=stack.operator_output)
    assert stack.jobs() == []
    stack.apply(PEERING)
    created = time.monotonic()
    wait_for(stack.jobs, 30, message=stack.operator_output)
    # kopf alone would announce this replica at its next keep-alive, 50-55 s later.
    assert time.monotonic() - created < 10
    assert stack.operator_output().count("waiting for the peering object") == 1


def test_two_replicas_one_in_charge_both_probes_answer(stack, stack_db):
    yacht = add_yacht(stack_db, "Two Replicas")
    add_rows(stack_db, yacht.id, 5)
    stack.apply(PEERING)
    stack.apply(backfill("replicated", yacht.id))
    ports = [free_port(), free_port()]
    for port in ports:
        stack.spawn_operator(OPERATOR_HEALTH_PORT=str(port), **WITH_PEERING)

    def both_answer() -> list[dict] | None:
        try:
            answers = [probe(port) for port in ports]
        except OSError:
            return None
        return answers if sorted(a["active"] for a in answers) == [False, True] else None

    wait_for(both_answer, 60, message=stack.operator_output)
    wait_for(stack.jobs, 30, message=stack.operator_output)
    # One replica admitted it, once. (A replica that started first may act until one of
    # higher priority announces itself, then stands by: kopf's rule, random priorities.)
    assert len(stack.jobs()) == 1
    time.sleep(1)
    assert sorted(a["active"] for a in map(probe, ports)) == [False, True]
