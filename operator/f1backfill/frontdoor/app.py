"""The HTTP API of `f1backfill serve` (FastAPI): search, clicks, the login pre-warm, health
and metrics. Each endpoint verifies the bearer token before it reads anything else, and
takes the yacht, the user, the organisation and the role from the token's claims only."""

# No `from __future__ import annotations` here: FastAPI evaluates the endpoints' annotations,
# and the search's `limit` bound names a local (the configured maximum).
import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServeSettings
from ..errors import (
    BackfillError,
    DatabaseUnavailable,
    EmbeddingMismatch,
    Forbidden,
    InvalidQuery,
    NotFound,
    SchemaNotReady,
    Unauthorized,
)
from ..querytext import search_query
from .auth import Claims, TokenVerifier
from .cache import SearchCache, search_key
from .metrics import FrontDoorMetrics
from .prewarm import RECENT_DAYS, login_queries, prewarm
from .search import Searcher, SearchIndex, click_kwargs

log = logging.getLogger(__name__)

MAX_CLICK_BYTES = 8 * 1024
SSE = "text/event-stream"


class Click(BaseModel):
    """A click on a search result, as the search page posts it. Who clicked, and in which
    yacht, come from the token; a body that says so itself is refused."""

    model_config = ConfigDict(extra="forbid")

    search_id: uuid.UUID | None = None
    query_text: Annotated[str, Field(min_length=1, max_length=10_000)]
    clicked_object_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]
    clicked_object_id: uuid.UUID
    click_position: Annotated[int, Field(ge=1, le=10_000)] | None = None
    search_timestamp: datetime | None = None
    dwell_time_ms: Annotated[int, Field(ge=0, le=86_400_000)] | None = None
    was_successful: bool | None = None


@dataclass
class FrontDoor:
    """What the endpoints share: settings, clients, the searcher, the cache, metrics."""

    settings: ServeSettings
    index: SearchIndex
    searcher: Searcher
    cache: SearchCache
    verifier: TokenVerifier
    metrics: FrontDoorMetrics
    roles: dict[str, frozenset[str] | None] = field(default_factory=dict)
    background: set[asyncio.Task] = field(default_factory=set)

    def object_types(self, claims: Claims) -> frozenset[str] | None:
        if claims.role not in self.roles:
            raise Forbidden(f"role {claims.role!r} may not search")
        return self.roles[claims.role]

    def check_clickable(self, claims: Claims, object_type: str, object_id: uuid.UUID) -> None:
        """A click is recorded only on a row the user's role could have been shown."""
        types = self.object_types(claims)
        if types is not None and object_type not in types:
            raise NotFound(f"no search_index row {object_type}/{object_id} that role "
                           f"{claims.role!r} can find in yacht {claims.yacht_id}")

    async def search(self, claims: Claims, normalized: str, limit: int
                     ) -> tuple[list[dict[str, Any]], bool]:
        """(hits, whether they came from the cache)."""
        types = self.object_types(claims)

        async def compute() -> list[dict[str, Any]]:
            hits = await run_in_threadpool(self.searcher.search, claims.yacht_id, normalized,
                                           types, limit)
            return [hit.to_dict() for hit in hits]

        generation = await self.cache.generation(claims.yacht_id)
        if generation is None:  # Redis is away: uncached
            return await compute(), False
        key = search_key(claims.yacht_id, claims.role, generation, normalized, limit)
        cached = await self.cache.get(key)
        if cached is not None:
            self.metrics.cache_hits.inc()
            return cached, True
        self.metrics.cache_misses.inc()

        async def compute_and_keep() -> list[dict[str, Any]]:
            hits = await compute()
            await self.cache.put(key, hits)
            return hits

        return await self.cache.single_flight(key, compute_and_keep), False

    async def warm(self, claims: Claims, normalized: str) -> bool:
        """Cache one query for a login, unless it is cached; True when it computed it."""
        generation = await self.cache.generation(claims.yacht_id)
        if generation is None:
            return False
        key = search_key(claims.yacht_id, claims.role, generation, normalized,
                         self.settings.default_limit)
        if await self.cache.holds(key):
            return False
        await self.search(claims, normalized, self.settings.default_limit)
        return True

    async def prewarm_login(self, claims: Claims) -> None:
        try:
            top = await run_in_threadpool(self.index.top_queries, claims.yacht_id,
                                          days=RECENT_DAYS,
                                          limit=self.settings.prewarm_top_queries)
        except BackfillError as exc:
            self.metrics.prewarm_failures.inc()
            log.warning("pre-warm of yacht %s: its top queries are not readable: %s",
                        claims.yacht_id, exc)
            top = []
        queries = login_queries(top, self.settings.max_query_chars)
        await prewarm(queries, lambda text: self.warm(claims, text),
                      concurrency=self.settings.prewarm_concurrency, metrics=self.metrics)


def create_app(door: FrontDoor, *, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    settings = door.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for task in list(door.background):
            task.cancel()
        await door.cache.client.aclose()
        await run_in_threadpool(door.index.close)
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="F1 Cortex search", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.door = door

    app.add_middleware(Measured, metrics=door.metrics)
    _error_handlers(app)

    @app.get("/api/f1/search")
    async def search(request: Request,
                     q: Annotated[str, Query(max_length=10_000)] = "",
                     limit: Annotated[int | None, Query(ge=1, le=settings.max_limit)] = None,
                     ) -> Response:
        claims = await door.verifier.verify(request.headers.get("authorization"))
        normalized = search_query(q, settings.max_query_chars)
        hits, cached = await door.search(claims, normalized, limit or settings.default_limit)
        body = {"search_id": str(uuid.uuid4()), "query": normalized, "results": hits,
                "cached": cached}
        if SSE in request.headers.get("accept", ""):
            return StreamingResponse(_events(body), media_type=SSE,
                                     headers={"Cache-Control": "no-cache"})
        return JSONResponse(body)

    @app.post("/api/analytics/search-click", status_code=202)
    async def search_click(request: Request) -> JSONResponse:
        claims = await door.verifier.verify(request.headers.get("authorization"))
        raw = await _limited_body(request, MAX_CLICK_BYTES)
        try:
            click = Click.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from None
        door.check_clickable(claims, click.clicked_object_type, click.clicked_object_id)
        try:
            click_id = await run_in_threadpool(door.index.record_click, **click_kwargs(
                claims=claims, body=click, max_query_chars=settings.max_query_chars))
        except InvalidQuery as exc:  # normalised as the feedback job will read it
            raise RequestValidationError([{"loc": ("body", "query_text"), "msg": str(exc),
                                           "type": "value_error"}]) from None
        return JSONResponse({"click_id": click_id}, status_code=202)

    @app.post("/api/f1/session", status_code=202)
    async def session(request: Request) -> JSONResponse:
        claims = await door.verifier.verify(request.headers.get("authorization"))
        door.object_types(claims)  # a role that may not search has nothing to warm
        task = asyncio.create_task(door.prewarm_login(claims), name="pre-warm")
        door.background.add(task)
        task.add_done_callback(door.background.discard)
        return JSONResponse({"prewarm": "started"}, status_code=202)

    page = _page_files()

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return page["index.html"].response()

    @app.get("/page/{name}", include_in_schema=False)
    async def page_file(name: str) -> Response:
        if name not in page or name == "index.html":
            raise NotFound(f"no page file {name!r}")
        return page[name].response()

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while searches can be answered: Redis away only makes them uncached
        ("degraded"), so a readiness probe keeps the pod; Postgres away is 503."""
        checks = {"postgres": "ok", "redis": "ok"}
        try:
            await run_in_threadpool(door.index.ping)
        except BackfillError as exc:
            checks["postgres"] = str(exc)
        if not await door.cache.ping():
            checks["redis"] = "unreachable"
        if checks["postgres"] != "ok":
            return JSONResponse({"status": "unavailable", **checks}, status_code=503)
        status = "ok" if checks["redis"] == "ok" else "degraded"
        return JSONResponse({"status": status, **checks})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(door.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# The page loads nothing but its own files, and no other site may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PAGE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class _PageFile:
    content: bytes
    media_type: str

    def response(self) -> Response:
        return Response(self.content, media_type=self.media_type, headers=PAGE_HEADERS)


class Measured:
    """Counts and times every request by endpoint and status. Plain ASGI: Starlette's
    `@app.middleware("http")` runs each request through a task and a stream of its own,
    which cost a cached search a fifth of its CPU."""

    def __init__(self, app: ASGIApp, metrics: FrontDoorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a reply

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _page_files() -> dict[str, _PageFile]:
    """The search page's files (the package's `page/`), read once."""
    files = {}
    for item in resources.files(__package__).joinpath("page").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if suffix in PAGE_TYPES:
            files[item.name] = _PageFile(item.read_bytes(), PAGE_TYPES[suffix])
    return files


async def _events(body: dict[str, Any]) -> AsyncIterator[bytes]:
    """The search as server-sent events: one `result` per hit, then `done`."""
    for position, hit in enumerate(body["results"], start=1):
        yield _event("result", {**hit, "position": position})
    yield _event("done", {"search_id": body["search_id"], "query": body["query"],
                          "count": len(body["results"]), "cached": body["cached"]})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge()
    return bytes(body)


class _TooLarge(Exception):
    pass


def _error_handlers(app: FastAPI) -> None:
    """The package's errors as HTTP answers: short, and never a 500 for what a client sent."""

    def answer(status: int, error: str, **headers: str) -> Callable[..., Any]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": error or str(exc)}, status_code=status,
                                headers=headers or None)
        return handler

    app.add_exception_handler(Unauthorized, answer(401, "unauthorized",
                                                   **{"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(Forbidden, answer(403, ""))
    app.add_exception_handler(NotFound, answer(404, ""))
    app.add_exception_handler(EmbeddingMismatch, answer(409, ""))
    app.add_exception_handler(_TooLarge, answer(413, f"a click body is at most "
                                                     f"{MAX_CLICK_BYTES} bytes"))
    app.add_exception_handler(DatabaseUnavailable, answer(503, "search is unavailable"))
    app.add_exception_handler(SchemaNotReady, answer(503, "search is unavailable"))

    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never the input itself: it may be any bytes, and is the client's.
        return JSONResponse({"detail": [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors()]}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)

    async def invalid_query(_: Request, exc: InvalidQuery) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["query", "q"], "msg": str(exc),
                                         "type": "value_error"}]}, status_code=422)

    app.add_exception_handler(InvalidQuery, invalid_query)
