"""The search front door for tests: `f1backfill serve`'s app, served by a real uvicorn on
127.0.0.1 in a thread, over real PostgreSQL and Redis, with an httpx client; and a yacht
whose rows the real worker embedded.

    with running_door(database_url, redis_url) as door:
        response = door.get("/api/f1/search", token=captain_token(yacht), params={"q": "oil"})
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from f1backfill.config import ServeSettings, WorkerSettings
from f1backfill.frontdoor.app import FrontDoor, create_app
from f1backfill.frontdoor.server import build_door
from f1backfill.worker.loop import Worker
from tests.support.tokens import ORG_ID, SECRET, USER_ID, bearer, mint, valid_claims
from tests.support.waiting import wait_for


@dataclass
class RunningDoor:
    url: str
    door: FrontDoor
    client: httpx.Client

    def get(self, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=_headers(token, kwargs), **kwargs)

    def post(self, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, headers=_headers(token, kwargs), **kwargs)

    def search(self, token: str, q: str = "", **params: Any) -> httpx.Response:
        return self.get("/api/f1/search", token=token, params={"q": q, **params})


def _headers(token: str | None, kwargs: dict[str, Any]) -> dict[str, str]:
    headers = dict(kwargs.pop("headers", None) or {})
    if token is not None:
        headers["Authorization"] = bearer(token)
    return headers


def serve_settings(database_url: str, redis_url: str, **overrides: Any) -> ServeSettings:
    values: dict[str, Any] = {"database_url": database_url, "redis_url": redis_url,
                              "jwt_secret": SECRET}
    values.update(overrides)
    settings = ServeSettings.from_env({}, **values)
    settings.validate()
    return settings


@contextlib.contextmanager
def serving(door: FrontDoor) -> Iterator[RunningDoor]:
    """`door`'s app under uvicorn on a free port of 127.0.0.1 until the block ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(door), log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                              name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, message="uvicorn did not start")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=20) as client:
            yield RunningDoor(url, door, client)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


@contextlib.contextmanager
def running_door(database_url: str, redis_url: str, **overrides: Any
                 ) -> Iterator[RunningDoor]:
    """The front door as `serve` builds it from settings (`overrides` on top)."""
    settings = serve_settings(database_url, redis_url, **overrides)
    with serving(build_door(settings, redis_url)) as running:
        yield running


def token_for(yacht_id: Any, role: str = "captain", **claims: Any) -> str:
    """An HS256 token of the tests' secret for a user of `yacht_id` in `role`."""
    return mint(valid_claims(yacht_id=str(yacht_id), role=role, user_id=USER_ID,
                             org_id=ORG_ID, **claims), SECRET)


def embed_all(database_url: str, yacht_id: Any, *, redis_url: str = "",
              **overrides: Any) -> None:
    """Drain the yacht's queue with the real worker and the offline hash provider (which
    `serve` also embeds queries with by default)."""
    values: dict[str, Any] = {
        "yacht_id": str(yacht_id), "database_url": database_url, "provider": "hash",
        "prometheus_port": 0, "batch_sleep_sec": 0.0, "redis_url": redis_url}
    values.update(overrides)
    summary = Worker(WorkerSettings.from_env({}, **values)).run()
    assert summary.exit_code == 0, summary
