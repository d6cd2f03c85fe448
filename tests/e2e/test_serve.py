"""`f1backfill serve` as a process, as a Deployment runs it: healthy, searching, a local
Redis when REDIS_URL is unset, and a clean stop on SIGTERM that leaves nothing behind and
never logs a secret."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from f1sandbox.searchapi import free_port
from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import embed_all, token_for
from tests.support.tokens import SECRET
from tests.support.waiting import wait_for

SCRIPT = str(Path(sys.executable).with_name("f1backfill"))


@pytest.fixture
def temp_dir():
    temp = Path(tempfile.mkdtemp(prefix="f1-serve-tmp-"))
    temp.chmod(0o755)
    yield temp
    shutil.rmtree(temp, ignore_errors=True)


def start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    return process, f"http://127.0.0.1:{port}"


def healthy(url: str) -> bool:
    return httpx.get(url + "/health", timeout=2).status_code == 200


@pytest.mark.parametrize("redis", ["local", "REDIS_URL"])
def test_serve_searches_and_stops_cleanly_on_sigterm(db, database_url, redis_url, temp_dir,
                                                     redis):
    yacht = add_yacht(db, "Served")
    keys = add_rows(db, yacht.id, 5, texts=["Racor oil filter", "Anchor winch", "Manual",
                                            "Email", "Certificate"])
    embed_all(database_url, yacht.id)
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": SECRET,
           "TMPDIR": str(temp_dir), "LOG_LEVEL": "INFO"}
    env.pop("REDIS_URL", None)
    if redis == "REDIS_URL":
        env["REDIS_URL"] = redis_url
    process, url = start(env)
    try:
        wait_for(lambda: healthy(url), 30, message=lambda: f"serve exited: {process.poll()}")
        children = psutil.Process(process.pid).children(recursive=True)
        assert [c.name() for c in children] == (["redis-server"] if redis == "local" else [])
        answer = httpx.get(url + "/api/f1/search", params={"q": "oil filter"},
                           headers={"Authorization": f"Bearer {token_for(yacht.id)}"})
        assert answer.status_code == 200
        assert answer.json()["results"][0]["object_id"] == str(keys[0][1])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "Traceback" not in output and " ERROR " not in output, output
    assert SECRET not in output
    if redis == "local":
        assert "REDIS_URL is not set: serving with a local Redis" in output
        assert not any(c.is_running() for c in children)
    assert list(temp_dir.iterdir()) == []  # the local Redis's directory is gone
