"""The operator stopped while its release is uninstalled: helm deletes the peering object,
the Deployment and then the RBAC at once, so the terminating pod finds its object gone and
every request refused. It must stop without warnings, errors or tracebacks."""

from __future__ import annotations

import signal
import time

from tests.support.fleet import add_rows, add_yacht
from tests.support.stack import backfill
from tests.support.waiting import wait_for

PEERING = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
           "metadata": {"name": "f1backfill"}}


def test_the_operator_stops_quietly_while_its_release_is_uninstalled(stack, stack_db):
    yacht = add_yacht(stack_db, "Uninstalled")
    add_rows(stack_db, yacht.id, 5)
    stack.apply(PEERING)
    stack.apply(backfill("uninstalled", yacht.id))
    stack.start_operator(STANDALONE="false", PEERING_NAME="f1backfill")
    # Settled: admitted, its Event posted, then ticks that find nothing to write. (An
    # uninstall that lands in the middle of a tick, before the pod's SIGTERM, is refused
    # what it was writing, and says so: that is not the shutdown.)
    wait_for(lambda: [e for e in stack.events("uninstalled") if e["reason"] == "Admitted"],
             30, message=stack.operator_output)
    time.sleep(1.5)
    before = len(stack.operator_output())

    stack.api.delete("clusterkopfpeerings", "f1backfill")  # helm deletes custom resources first
    stack.api.forbid_all()  # ... and the Role a moment after the Deployment
    stack.stop_operator(signal.SIGTERM)

    after = stack.operator_output()[before:]
    noisy = [line for line in after.splitlines()
             if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    assert noisy == [], after
