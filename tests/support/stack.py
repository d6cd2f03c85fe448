"""The whole product on one machine: emulated Kubernetes API, embedded Postgres, the fake
OpenAI server, the operator process, and a job runner that runs each Job's worker as a
local process; with a Redis URL, the operator and the workers bump the yachts' cache
generations there. Used by the end-to-end tests and by `f1sandbox demo`'s test twin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f1backfill.constants import GROUP, PLURAL, VERSION
from f1backfill.generations import Generations
from f1sandbox.fake_openai import FakeOpenAI
from f1sandbox.jobrunner import JobRunner
from f1sandbox.kubeapi import KubeAPI

ROOT = Path(__file__).resolve().parents[2]
CRDS = [ROOT / "crds" / "yachtbackfill.yaml", ROOT / "crds" / "kopf-peering.yaml"]
WORKER = str(Path(sys.executable).with_name("f1backfill"))
REDIS_SECRET = "f1backfill-redis"  # the workers' REDIS_URL, in the backfills' namespace


def backfill(name: str, yacht_id: Any, *, namespace: str = "fleet", **spec: Any) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "YachtBackfill",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"yachtId": str(yacht_id), **spec}}


@dataclass
class Stack:
    api: KubeAPI
    database_url: str
    fake: FakeOpenAI
    workdir: Path
    kubeconfig: Path
    namespace: str = "fleet"
    redis_url: str = ""  # empty: no Redis, nothing is bumped
    operator_env: dict[str, str] = field(default_factory=dict)
    operator: subprocess.Popen | None = None
    operator_log: Path | None = None
    runner: JobRunner | None = None
    _restarts: int = 0
    _spawned: list[subprocess.Popen] = field(default_factory=list)

    # -- processes ---------------------------------------------------------------------
    def start_operator(self, **env: str) -> subprocess.Popen:
        """The operator process the test drives (`stop_operator` stops it)."""
        self.operator = self.spawn_operator(**env)
        return self.operator

    def spawn_operator(self, **env: str) -> subprocess.Popen:
        """An operator process, e.g. another replica, logging to its own file (the latest
        one's is `operator_log`); every one is stopped with the stack."""
        self._restarts += 1
        self.operator_log = self.workdir / f"operator-{self._restarts}.log"
        environment = {
            **os.environ, "KUBECONFIG": str(self.kubeconfig),
            "DATABASE_URL": self.database_url, "STANDALONE": "true",
            "WORKER_COMMAND": f"{WORKER},worker", "WORKER_IMAGE": "f1backfill:test",
            "DEFAULT_EMBEDDING_PROVIDER": "openai", "OPENAI_BASE_URL": self.fake.base_url,
            "RECONCILE_INTERVAL_SEC": "0.5", "DRIFT_INTERVAL_SEC": "1",
            "OPERATOR_METRICS_PORT": "0", "OPERATOR_HEALTH_PORT": "0",
            "JOB_TTL_SECONDS_AFTER_FINISHED": "3600", "LOG_LEVEL": "INFO",
            "REDIS_URL": self.redis_url,
            "WORKER_REDIS_SECRET": REDIS_SECRET if self.redis_url else "",
            **self.operator_env, **env}
        with open(self.operator_log, "w") as log:
            process = subprocess.Popen(
                [WORKER, "operator"], env=environment, stdout=log, stderr=subprocess.STDOUT)
        self._spawned.append(process)
        return process

    def stop_operator(self, sig: int = signal.SIGTERM) -> None:
        if self.operator is None:
            return
        self.operator.send_signal(sig)
        try:
            self.operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.operator.kill()
            self.operator.wait()
        self.operator = None

    def start_runner(self) -> JobRunner:
        def rewrite(argv: list[str], env: dict[str, str], job: dict) -> list[str]:
            # Several workers share this machine: no fixed metrics port.
            env["PROMETHEUS_PORT"] = "0"
            return argv

        self.runner = JobRunner(
            self.api, self.workdir / "jobs", inherit_env=True, rewrite=rewrite,
            grace_period=10)
        self.runner.start()
        return self.runner

    def operator_output(self) -> str:
        return self.operator_log.read_text() if self.operator_log else ""

    # -- the cluster -------------------------------------------------------------------
    def apply(self, manifest: dict) -> dict:
        return self.api.apply(manifest)

    def backfills(self) -> dict[str, dict]:
        return {b["metadata"]["name"]: b for b in self.api.objects(PLURAL, self.namespace)}

    def status(self, name: str) -> dict:
        return self.backfills().get(name, {}).get("status") or {}

    def phases(self) -> dict[str, str | None]:
        return {n: (b.get("status") or {}).get("phase") for n, b in self.backfills().items()}

    def jobs(self) -> list[dict]:
        return self.api.objects("jobs", self.namespace)

    def unfinished_jobs(self) -> list[dict]:
        def finished(job: dict) -> bool:
            conditions = (job.get("status") or {}).get("conditions") or []
            return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in conditions)
        return [j for j in self.jobs() if not finished(j)]

    def generation(self, yacht_id: Any) -> int:
        """The yacht's search cache generation in the stack's Redis."""
        with Generations(self.redis_url) as generations:
            return generations.read(str(yacht_id))

    def events(self, name: str | None = None) -> list[dict]:
        events = self.api.objects("events", self.namespace)
        return [e for e in events
                if name is None or e.get("involvedObject", {}).get("name") == name]


@contextmanager
def running_stack(pg_server, tmp_path: Path, *, fake: FakeOpenAI | None = None,
                  migrated: bool = True, redis_url: str = "",
                  **operator_env: str) -> Iterator[Stack]:
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    database_url = pg_server.create_database(name)
    from f1backfill.db.migrate import migrate

    if migrated:
        migrate(database_url)
    own_fake = fake is None
    fake = fake or FakeOpenAI().start()
    api = KubeAPI().start()
    stack = None
    try:
        for crd in CRDS:
            api.load_crd(crd)
        api.create_namespace("fleet")
        api.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "f1backfill-database", "namespace": "fleet"},
                   "stringData": {"DATABASE_URL": database_url}})
        api.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "f1backfill-openai", "namespace": "fleet"},
                   "stringData": {"OPENAI_API_KEY": "sk-e2e"}})
        if redis_url:
            api.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": REDIS_SECRET, "namespace": "fleet"},
                       "stringData": {"REDIS_URL": redis_url}})
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        stack = Stack(api, database_url, fake, tmp_path, kubeconfig, redis_url=redis_url,
                      operator_env=dict(operator_env))
        yield stack
    finally:
        if stack is not None:
            stack.stop_operator()
            for process in stack._spawned:
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=20)
            if stack.runner is not None:
                stack.runner.stop()
        api.stop()
        if own_fake:
            fake.stop()
