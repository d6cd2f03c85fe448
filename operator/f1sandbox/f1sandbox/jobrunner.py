"""Play kubelet and Job controller for batch/v1 Jobs: run each Job's container locally.

The runner talks to the API server only over HTTP (list + watch Jobs, read Secrets and
ConfigMaps, merge-patch ``/status``), so it works against the emulator or any server.
For each Job it runs the pod template's single container ``command`` + ``args`` as a
local subprocess (its own process group), with the container's env resolved: plain
values, ``valueFrom`` (secretKeyRef, configMapKeyRef, fieldRef for metadata.name /
namespace / uid / labels / annotations, status.podIP, spec.nodeName), ``envFrom`` and
``$(VAR)`` references, on top of the env the test gives. No Pod objects are created.

Status, as the Job controller writes it: ``startTime`` and ``active: 1`` while running;
on exit 0 ``succeeded: 1``, ``completionTime`` and the SuccessCriteriaMet + Complete
conditions; on a non-zero exit ``failed`` counts up and the container is run again until
``backoffLimit`` failures have been exceeded, then FailureTarget + Failed
(BackoffLimitExceeded). ``activeDeadlineSeconds`` kills it (Failed, DeadlineExceeded);
``spec.suspend`` stops it (Suspended) and resuming starts it again; deleting the Job
sends SIGTERM and, after ``terminationGracePeriodSeconds``, SIGKILL, as a kubelet does;
``ttlSecondsAfterFinished`` deletes a finished Job (the TTL controller's part).
Each Job's output goes to ``<workdir>/<namespace>.<name>.log``. As a process of its own:
``f1sandbox jobrunner``.

Limitations: one container per pod (init and sidecar containers are ignored),
completions/parallelism above 1 are run as one, no resource limits are enforced, and the
retry delay is ``retry_delay`` rather than the controller's exponential 10 s backoff.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import random
import re
import shlex
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

Rewrite = Callable[[list[str], dict[str, str], dict[str, Any]], list[str]]
_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubelet's ``$(VAR)`` expansion: known names are replaced, ``$$`` is a ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_RE.sub(replace, text)


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class EnvNotReady(Exception):
    """A referenced Secret/ConfigMap (or key) is missing: kubelet's CreateContainerConfigError."""


def connection_from(target: Any) -> tuple[str, dict[str, str]]:
    """(server URL, headers) from a URL, a kubeconfig path, or an object with ``.url``."""
    if hasattr(target, "url"):
        return str(target.url), {}
    text = str(target)
    if text.startswith(("http://", "https://")):
        return text.rstrip("/"), {}
    import yaml

    config = yaml.safe_load(Path(text).read_text())
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    context = contexts[config["current-context"]]
    server = clusters[context["cluster"]]["server"].rstrip("/")
    token = users.get(context.get("user"), {}).get("token")
    return server, ({"Authorization": f"Bearer {token}"} if token else {})


class _Run:
    """One Job being run: its task, its current process and what the runner told the API."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.uid: str = job["metadata"]["uid"]
        self.namespace: str = job["metadata"]["namespace"]
        self.name: str = job["metadata"]["name"]
        self.task: asyncio.Task | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.pod_name = ""
        self.attempts = 0
        self.stop_reason = ""  # 'delete', 'suspend' or 'shutdown' once cancelled


class JobRunner:
    """Runs the Jobs it sees through the API as local processes, in a background thread.

    ``target`` is the API server: a kubeconfig path, a URL, or a ``KubeAPI``. ``env`` is
    the base environment of every process (PATH, PYTHONPATH ...), under the container's
    own env; with ``inherit_env`` the runner's environment is under both. ``rewrite`` may
    change the argv (and the env dict, in place) before a process starts, e.g. to map
    an image's entrypoint to a local executable; it gets (argv, env, job).
    """

    def __init__(
        self,
        target: Any,
        workdir: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        namespace: str | None = None,
        inherit_env: bool = False,
        rewrite: Rewrite | None = None,
        grace_period: float | None = None,
        retry_delay: float = 0.2,
        honour_ttl: bool = True,
    ) -> None:
        self.server, self.headers = connection_from(target)
        self.workdir = Path(workdir)
        self.env = dict(env or {})
        self.namespace = namespace
        self.inherit_env = inherit_env
        self.rewrite = rewrite
        self.grace_period = grace_period
        self.retry_delay = retry_delay
        self.honour_ttl = honour_ttl
        self._runs: dict[tuple[str, str], _Run] = {}
        self._ttl_scheduled: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._history: dict[tuple[str, str], list[int]] = {}
        self._done: set[str] = set()  # uids run to the end or deleted: never run again
        self._stopping = False
        self._side_tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> JobRunner:
        if self._thread is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(started,), name="jobrunner", daemon=True
        )
        self._thread.start()
        started.wait(10)
        return self

    def _run_loop(self, started: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._main = self._loop.create_task(self.run())
        self._loop.call_soon(started.set)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._main)
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def stop(self) -> None:
        """Stop watching and end every running process (SIGTERM, SIGKILL after 5 s)."""
        if self._thread is None or self._loop is None or self._main is None:
            return
        self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> JobRunner:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection

    def log_path(self, namespace: str, name: str) -> Path:
        return self.workdir / f"{namespace}.{name}.log"

    def pids(self, namespace: str, name: str) -> list[int]:
        """Process ids started for a Job, oldest first (one per attempt)."""
        return list(self._history.get((namespace, name), []))

    def running(self) -> list[tuple[str, str]]:
        """(namespace, name) of the Jobs with a live process now."""
        return [
            key
            for key, run in list(self._runs.items())
            if run.process is not None and run.process.returncode is None
        ]

    # ------------------------------------------------------------------ the watch

    async def run(self) -> None:
        """List and watch Jobs until cancelled; relist after errors and expired versions."""
        self._session = aiohttp.ClientSession(headers=self.headers)
        try:
            while True:
                try:
                    version = await self._list()
                    await self._watch(version)
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    self._log_runner(f"watch failed, relisting: {error!r}")
                    await asyncio.sleep(0.5)
        finally:
            self._stopping = True
            for task in list(self._side_tasks):
                task.cancel()
            runs = list(self._runs.values())
            for run in runs:
                run.stop_reason = "shutdown"
                if run.task is not None:
                    run.task.cancel()
            await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)
            await self._session.close()

    def _jobs_url(self, namespace: str | None = None) -> str:
        namespace = namespace or self.namespace
        if namespace:
            return f"{self.server}/apis/batch/v1/namespaces/{namespace}/jobs"
        return f"{self.server}/apis/batch/v1/jobs"

    async def _list(self) -> str:
        assert self._session is not None
        async with self._session.get(self._jobs_url()) as response:
            response.raise_for_status()
            body = await response.json()
        for job in body.get("items") or []:
            self._observe("ADDED", job)
        return body["metadata"]["resourceVersion"]

    async def _watch(self, version: str) -> None:
        assert self._session is not None
        while True:
            params = {
                "watch": "true",
                "resourceVersion": version,
                "timeoutSeconds": "60",
                "allowWatchBookmarks": "true",
            }
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with self._session.get(
                self._jobs_url(), params=params, timeout=timeout
            ) as response:
                response.raise_for_status()
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            return  # e.g. 410 Gone: relist
                        obj = event["object"]
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event["type"] != "BOOKMARK":
                            self._observe(event["type"], obj)

    def _observe(self, event_type: str, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        run = self._runs.get(key)
        if run is not None and run.uid != meta["uid"]:
            self._cancel(run, "delete")  # a new Job with the same name replaced the old one
            run = None
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._done.add(meta["uid"])
            if run is not None:
                self._cancel(run, "delete")
            return
        if _finished(job):
            self._schedule_ttl(job)
            return
        if meta["uid"] in self._done:
            return  # an event older than our own final status write
        suspended = bool(job.get("spec", {}).get("suspend"))
        if suspended:
            if run is not None:
                self._cancel(run, "suspend")
            elif not any(
                c.get("type") == "Suspended" and c.get("status") == "True"
                for c in job.get("status", {}).get("conditions") or []
            ):
                self._spawn(self._mark_suspended(job))
            return
        if run is None:
            run = _Run(job)
            self._runs[key] = run
            run.task = asyncio.get_running_loop().create_task(self._run_job(run, job))

    def _spawn(self, coro: Any) -> None:
        """Start a side task (a status write, a TTL deletion) that ``stop()`` cancels."""
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _cancel(self, run: _Run, reason: str) -> None:
        if self._runs.get((run.namespace, run.name)) is run:
            del self._runs[(run.namespace, run.name)]
        run.stop_reason = reason
        if run.task is not None and not run.task.done():
            run.task.cancel()

    # ------------------------------------------------------------------ one Job

    async def _run_job(self, run: _Run, job: dict[str, Any]) -> None:
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
        if any(c.get("type") == "Suspended" for c in status.get("conditions") or []):
            conditions.append(_condition("Suspended", "False", "JobResumed", "Job resumed"))
        failed = int(status.get("failed") or 0)
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        started = _now()
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        await self._patch_status(
            run, {"startTime": started, "active": 1, "conditions": conditions or None}
        )
        try:
            while True:
                left = None if deadline is None else deadline - (loop.time() - started_at)
                code = await self._attempt(run, job, left)
                if code == 0:
                    done = "Reached expected number of succeeded pods"
                    conditions += [
                        _condition("SuccessCriteriaMet", "True", "CompletionsReached", done),
                        _condition("Complete", "True", "CompletionsReached", done),
                    ]
                    await self._patch_status(
                        run,
                        {
                            "active": None,
                            "succeeded": 1,
                            "completionTime": _now(),
                            "conditions": conditions,
                            "ready": 0,
                        },
                    )
                    return
                failed += 1
                if code is None:
                    reason = "DeadlineExceeded"
                    message = "Job was active longer than specified deadline"
                elif failed <= backoff_limit:
                    await self._patch_status(run, {"failed": failed, "active": 1})
                    await asyncio.sleep(self.retry_delay)
                    continue
                else:
                    reason = "BackoffLimitExceeded"
                    message = "Job has reached the specified backoff limit"
                conditions += [
                    _condition("FailureTarget", "True", reason, message),
                    _condition("Failed", "True", reason, message),
                ]
                await self._patch_status(
                    run, {"active": None, "failed": failed, "conditions": conditions, "ready": 0}
                )
                return
        except asyncio.CancelledError:
            if run.stop_reason == "suspend":
                conditions.append(_condition("Suspended", "True", "JobSuspended", "Job suspended"))
                await self._patch_status(run, {"active": None, "conditions": conditions})
            raise
        finally:
            if run.stop_reason != "suspend":
                self._done.add(run.uid)
            if self._runs.get((run.namespace, run.name)) is run:
                del self._runs[(run.namespace, run.name)]

    async def _attempt(self, run: _Run, job: dict[str, Any], left: float | None) -> int | None:
        """Run the container once; its exit code, or None when the deadline killed it."""
        run.attempts += 1
        run.pod_name = f"{run.name}-{''.join(random.choices(_ALPHABET, k=5))}"
        container = ((job["spec"].get("template") or {}).get("spec") or {}).get("containers", [{}])[
            0
        ]
        log = self.log_path(run.namespace, run.name)
        env = await self._environment_when_ready(run, job, container, log)
        argv = [
            _expand(str(a), env)
            for a in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        if self.rewrite is not None:
            argv = self.rewrite(argv, env, job)
        if not argv:
            self._log(
                log,
                f"attempt {run.attempts}: the container has no command and no "
                "rewrite hook maps its image entrypoint; failing it",
            )
            return 127
        working_dir = container.get("workingDir")
        cwd = working_dir if working_dir and Path(working_dir).is_dir() else self.workdir
        self._log(log, f"attempt {run.attempts} as pod {run.pod_name}: {shlex.join(argv)}")
        with log.open("ab") as output:
            try:
                run.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                self._log(log, f"cannot start the process: {error}")
                return 128
        process = run.process
        self._history.setdefault((run.namespace, run.name), []).append(process.pid)
        try:
            code = await asyncio.wait_for(process.wait(), left)
        except TimeoutError:
            self._log(log, "activeDeadlineSeconds exceeded; killing the process")
            await self._terminate(process, self._grace(job))
            return None
        except asyncio.CancelledError:
            self._log(log, "the Job was deleted or suspended; terminating the process")
            await asyncio.shield(self._terminate(process, self._grace(job)))
            raise
        self._log(log, f"exit code {code}")
        return code

    def _grace(self, job: dict[str, Any]) -> float:
        template_spec = (job["spec"].get("template") or {}).get("spec") or {}
        grace = float(template_spec.get("terminationGracePeriodSeconds", 30))
        if self._stopping:
            grace = min(grace, 5.0)  # the runner is shutting down: do not linger
        return grace if self.grace_period is None else min(grace, self.grace_period)

    async def _terminate(self, process: asyncio.subprocess.Process, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, as a kubelet."""
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _environment_when_ready(
        self, run: _Run, job: dict[str, Any], container: dict[str, Any], log: Path
    ) -> dict[str, str]:
        reported = False
        while True:
            try:
                return await self._environment(run, job, container)
            except EnvNotReady as error:
                if not reported:
                    self._log(log, f"CreateContainerConfigError: {error}; waiting")
                    reported = True
                await asyncio.sleep(0.5)

    async def _environment(
        self, run: _Run, job: dict[str, Any], container: dict[str, Any]
    ) -> dict[str, str]:
        env: dict[str, str] = dict(os.environ) if self.inherit_env else {}
        env.update(self.env)
        env.setdefault("HOSTNAME", run.pod_name)
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind in ("secretRef", "configMapRef"):
                ref = source.get(kind)
                if ref:
                    data = await self._read_data(
                        kind, run.namespace, ref["name"], optional=bool(ref.get("optional"))
                    )
                    env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = _expand(str(item["value"]), env)
            elif "valueFrom" in item:
                value = await self._value_from(run, job, item["valueFrom"], container)
                if value is not None:
                    env[name] = value
            else:
                env[name] = ""
        return env

    async def _value_from(
        self, run: _Run, job: dict[str, Any], source: dict[str, Any], container: dict[str, Any]
    ) -> str | None:
        for kind in ("secretKeyRef", "configMapKeyRef"):
            ref = source.get(kind)
            if ref:
                optional = bool(ref.get("optional"))
                data = await self._read_data(kind, run.namespace, ref["name"], optional=optional)
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise EnvNotReady(
                        f"couldn't find key {ref['key']} in "
                        f"{kind[:-6]} {run.namespace}/{ref['name']}"
                    )
                return data[ref["key"]]
        field = (source.get("fieldRef") or {}).get("fieldPath")
        if field:
            template_meta = (job["spec"].get("template") or {}).get("metadata") or {}
            simple = {
                "metadata.name": run.pod_name,
                "metadata.namespace": run.namespace,
                "metadata.uid": run.uid,
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.nodeName": "localhost",
                "spec.serviceAccountName": "default",
            }
            if field in simple:
                return simple[field]
            match = re.match(r"metadata\.(labels|annotations)\['(.+)'\]$", field)
            if match:
                return str((template_meta.get(match.group(1)) or {}).get(match.group(2), ""))
            return ""
        resource = (source.get("resourceFieldRef") or {}).get("resource")
        if resource:
            section, _, what = resource.partition(".")
            return str(((container.get("resources") or {}).get(section) or {}).get(what, ""))
        return None

    async def _read_data(
        self, kind: str, namespace: str, name: str, *, optional: bool
    ) -> dict[str, str]:
        assert self._session is not None
        plural = "secrets" if kind.startswith("secret") else "configmaps"
        url = f"{self.server}/api/v1/namespaces/{namespace}/{plural}/{name}"
        async with self._session.get(url) as response:
            if response.status == 404:
                if optional:
                    return {}
                raise EnvNotReady(f'{plural[:-1]} "{name}" not found')
            response.raise_for_status()
            body = await response.json()
        if plural == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
        return dict(body.get("data") or {})

    # ------------------------------------------------------------------ API writes

    async def _patch_status(self, run: _Run, status: dict[str, Any]) -> None:
        assert self._session is not None
        url = f"{self._jobs_url(run.namespace)}/{run.name}/status"
        body = json.dumps({"status": status})
        headers = {"Content-Type": "application/merge-patch+json"}
        for _ in range(3):
            try:
                async with self._session.patch(url, data=body, headers=headers) as response:
                    if response.status in (200, 404):
                        return  # 404: the Job is gone, nothing to report to
                    self._log_runner(
                        f"status patch of {run.namespace}/{run.name} got "
                        f"{response.status}: {await response.text()}"
                    )
            except aiohttp.ClientError as error:
                self._log_runner(f"status patch of {run.namespace}/{run.name}: {error!r}")
            await asyncio.sleep(0.2)

    async def _mark_suspended(self, job: dict[str, Any]) -> None:
        run = _Run(job)
        conditions = list(job.get("status", {}).get("conditions") or [])
        conditions.append(_condition("Suspended", "True", "JobSuspended", "Job suspended"))
        await self._patch_status(run, {"conditions": conditions})

    def _schedule_ttl(self, job: dict[str, Any]) -> None:
        ttl = job.get("spec", {}).get("ttlSecondsAfterFinished")
        uid = job["metadata"]["uid"]
        if not self.honour_ttl or ttl is None or uid in self._ttl_scheduled:
            return
        self._ttl_scheduled.add(uid)
        ends = [
            _parse_time(c.get("lastTransitionTime"))
            for c in job.get("status", {}).get("conditions") or []
            if c.get("type") in ("Complete", "Failed")
        ]
        finished = next((e for e in ends if e is not None), dt.datetime.now(dt.UTC))
        delay = max(0.0, finished.timestamp() + float(ttl) - dt.datetime.now(dt.UTC).timestamp())
        self._spawn(self._delete_later(job, delay))

    async def _delete_later(self, job: dict[str, Any], delay: float) -> None:
        assert self._session is not None
        await asyncio.sleep(delay)
        meta = job["metadata"]
        url = f"{self._jobs_url(meta['namespace'])}/{meta['name']}"
        body = json.dumps(
            {"propagationPolicy": "Background", "preconditions": {"uid": meta["uid"]}}
        )
        with contextlib.suppress(aiohttp.ClientError):
            async with self._session.delete(
                url, data=body, headers={"Content-Type": "application/json"}
            ):
                pass

    # ------------------------------------------------------------------ logs

    def _log(self, path: Path, message: str) -> None:
        with path.open("a") as log:
            log.write(f"[jobrunner {_now()}] {message}\n")

    def _log_runner(self, message: str) -> None:
        self._log(self.workdir / "jobrunner.log", message)

