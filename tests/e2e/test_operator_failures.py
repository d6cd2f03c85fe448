"""The operator when what it depends on fails: a permanent failure (a database never
migrated) is reported on every backfill as the condition Stalled and clears once fixed; a
transient one (a database that is away) is retried with a growing backoff, one log line per
attempt, and reported nowhere else."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid

from f1backfill.db.migrate import migrate
from f1sandbox.localdb import free_port
from tests.support.stack import WORKER, backfill, running_stack
from tests.support.waiting import wait_for


def condition(stack, name: str, type_: str) -> dict | None:
    return next((c for c in stack.status(name).get("conditions") or []
                 if c["type"] == type_), None)


def test_an_unmigrated_database_stalls_every_backfill_until_it_is_migrated(pg_server,
                                                                          tmp_path):
    with running_stack(pg_server, tmp_path, migrated=False) as stack:
        for name in ("aurora", "lady-marina"):
            stack.apply(backfill(name, uuid.uuid4(), namespace=stack.namespace))
        stack.start_operator()

        def stalled(name: str) -> dict | None:
            found = condition(stack, name, "Stalled")
            return found if found and found["status"] == "True" else None

        for name in ("aurora", "lady-marina"):
            found = wait_for(lambda n=name: stalled(n), 30, message=stack.operator_output)
            assert found["reason"] == "SchemaNotReady"
            assert "run `f1backfill migrate`" in found["message"]
        # The Event follows the status write that carries the condition: wait for it too.
        stalled_events = wait_for(
            lambda: [e["type"] for e in stack.events("aurora") if e["reason"] == "Stalled"],
            30, message=stack.operator_output)
        assert stalled_events == ["Warning"]
        output = stack.operator_output()
        assert "reconciliation blocked (SchemaNotReady" in output
        assert "Traceback" not in output

        migrate(stack.database_url)
        wait_for(lambda: (condition(stack, "aurora", "Stalled") or {}).get("status")
                 == "False", 90, message=stack.operator_output)
        assert condition(stack, "aurora", "Stalled")["reason"] == "Reconciled"
        # Its yacht has no rows: nothing to do, which for mode Once is done.
        assert stack.status("aurora")["phase"] == "Succeeded"
        assert condition(stack, "aurora", "Complete")["reason"] == "NoRows"
        # Logged once the tick that cleared it is over, after the status write.
        wait_for(lambda: "reconciliation recovered" in stack.operator_output(), 10,
                 message=stack.operator_output)


def test_a_database_that_is_away_is_retried_with_backoff_one_line_each(pg_server, tmp_path):
    with running_stack(pg_server, tmp_path) as stack:
        stack.apply(backfill("aurora", uuid.uuid4(), namespace=stack.namespace))
        stack.start_operator(
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
        pattern = re.compile(r"reconciliation failed \(DatabaseUnavailable: cannot connect "
                             r"to the database: [^\n]*\); next attempt in ([0-9.]+)s")
        waits = wait_for(lambda: [float(w) for w in pattern.findall(stack.operator_output())
                                  if len(pattern.findall(stack.operator_output())) >= 4],
                         30, message=stack.operator_output)
        assert waits == sorted(waits) and waits[-1] > waits[0]  # backing off
        time.sleep(1)
        output = stack.operator_output()
        assert "Traceback" not in output
        assert "DatabaseUnavailable" not in str(stack.status("aurora"))  # not a condition
        assert condition(stack, "aurora", "Stalled") is None


def test_an_unreachable_api_server_is_retried_one_line_each_without_tracebacks(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: gone, user: u}}]\ncurrent-context: c\n")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
           "OPERATOR_METRICS_PORT": "0", "OPERATOR_HEALTH_PORT": "0", "LOG_LEVEL": "INFO"}
    operator = subprocess.Popen([WORKER, "operator"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(12)
    finally:
        operator.terminate()
        output, _ = operator.communicate(timeout=30)
    assert "Traceback" not in output
    assert "urllib3" not in output  # the client's per-retry warnings add nothing
    informer = re.findall(r"watching YachtBackfills in all namespaces failed \(.*\); "
                          r"again in ([0-9.]+)s", output)
    assert len(informer) >= 3 and [float(w) for w in informer] == sorted(map(float, informer))
    assert float(informer[-1]) > float(informer[0])  # backing off, not hammering
    assert len(output.splitlines()) < 60, output
