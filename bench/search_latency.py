"""How fast the search front door answers, cached and uncached, and exact scan against HNSW.

Two stages on one throwaway PostgreSQL 18 + pgvector and one throwaway Redis:
`--per-yacht` rows of one yacht (5,000 by default), then `--yachts` yachts of that many rows
each (134 x 5,000 = 670,000). Every row is 'embedded' with the hash provider's vector of
its text, written by one binary COPY per yacht (the worker is not run), with the
provider, model and length `ServeSettings` defaults to, so the server accepts them. Texts
are whole words of the sample generator's vocabulary, at its lengths (200-3,000 chars);
the vectors are computed in bulk with the hash provider's own hashing and checked equal to
`HashProvider.embed` on a sample.

At each stage the real app (`build_door` + `create_app`) runs under uvicorn, one worker,
in a child process, as `f1backfill serve` runs it. A thin ASGI wrapper around the app
times each request in that process, from the request reaching the app to its last body
byte handed to uvicorn (uvicorn's HTTP parsing and the socket are outside it); the
provider's `embed`, `SearchIndex.nearest`/`signatures` and the login pre-warm are timed
there too. The bench process is the client, over loopback HTTP with keep-alive, one
request at a time for latencies; its round trip is reported beside the server's time.

- uncached: every search a query not searched before (so the cache misses), of a random
  yacht; at the fleet stage first one search of each yacht (its signature read too: the
  first search of a yacht in 30 s), then the rest.
- cached: searches already computed once, repeated.
- throughput: a load-generator process (asyncio, HTTP/1.1 keep-alive, `--concurrency`
  connections) sends cached searches for `--throughput-seconds`; the server, Redis and the
  client share the machine's cores, and each one's CPU is reported.
- pre-warm: POST /api/f1/session, then the time until every key of the login's queries is
  in Redis (polled every millisecond from the client), and the server's own time of it.
- exact scan against HNSW (fleet stage, server stopped): the product's `search_nearest`
  against an HNSW index (vector_cosine_ops) built on the throwaway database by this script,
  queried with the yacht filter, with and without `hnsw.iterative_scan = relaxed_order`:
  latency, recall@20 against the exact result, build time and size.

Prints ONE JSON line on stdout; progress and query plans on stderr.

    PYTHONPATH=. .venv/bin/python bench/search_latency.py [--yachts 134 --per-yacht 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import psutil
import psycopg2
import redis

from f1backfill.config import ServeSettings
from f1backfill.db import query
from f1backfill.db.migrate import migrate
from f1backfill.frontdoor.cache import search_key
from f1backfill.frontdoor.prewarm import login_queries
from f1backfill.generations import generation_key
from f1backfill.localredis import LocalRedis
from f1backfill.worker.providers import HashProvider
from f1sandbox.localdb import LocalPostgres
from f1sandbox.samples import OBJECT_TYPES, WORDS, text_lengths

TARGET_CACHED_P99_MS = 5.0
TARGET_UNCACHED_P99_MS = 50.0
TARGET_CACHED_PER_SECOND = 1000.0
TOP_K = 20
ROLE = "captain"  # may see every object type
TOKEN_LIFETIME_SECONDS = 6 * 3600
# What a login pre-warms beside the common queries: the yacht's most clicked of the week.
TOP_QUERIES = ("racor filter", "watermaker membrane", "gyro service", "anchor winch",
               "bilge pump alarm")
PROBE_PATH = "/_bench/probes"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    """p50/p95/p99 of millisecond figures."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(percentile(values, 0.50), 3),
            "p95_ms": round(percentile(values, 0.95), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "max_ms": round(max(values), 3), "mean_ms": round(statistics.fmean(values), 3)}


def serve_defaults() -> ServeSettings:
    return ServeSettings.from_env({})


# --- The rows ------------------------------------------------------------------------------


class RowMaker:
    """One yacht's rows: texts of whole sample words, and their hash-provider vectors.

    The hash provider sums a signed one-hot per word and per word pair (blake2b of the
    feature picks the dimension and the sign), then L2-normalises. With a closed
    vocabulary every feature is known in advance, so a yacht's 5,000 vectors are one
    `bincount`; `check` compares them with `HashProvider.embed` itself.
    """

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        count = len(WORDS)
        features = list(WORDS) + [f"{a} {b}" for a in WORDS for b in WORDS]
        digests = np.frombuffer(b"".join(
            hashlib.blake2b(f.encode(), digest_size=8).digest() for f in features),
            dtype=np.uint64)
        self.index = (digests % np.uint64(dimensions)).astype(np.int64)
        self.sign = np.where((digests >> np.uint64(63)) == 1, -1.0, 1.0)
        self.words = count
        self.spaced = np.array([len(w) + 1 for w in WORDS])

    def rows(self, count: int, seed: int) -> tuple[list[str], np.ndarray]:
        rng = np.random.default_rng(seed)
        lengths = text_lengths(random.Random(seed), long_share=0.0)  # add_rows' default
        targets = np.array([next(lengths) for _ in range(count)])
        most = int(targets.max() // self.spaced.min() + 2)
        ids = rng.integers(0, self.words, size=(count, most))
        used = (np.cumsum(self.spaced[ids], axis=1) < targets[:, None]).sum(axis=1) + 1
        texts, rows, features = [], [], []
        for n in range(count):
            words = ids[n, :used[n]]
            texts.append(" ".join([WORDS[w] for w in words.tolist()]))
            rows.append(np.full(2 * len(words) - 1, n))
            features.append(np.concatenate([words, self.words + words[:-1] * self.words
                                            + words[1:]]))
        row, feature = np.concatenate(rows), np.concatenate(features)
        summed = np.bincount(row * self.dimensions + self.index[feature],
                             weights=self.sign[feature], minlength=count * self.dimensions)
        summed = summed.reshape(count, self.dimensions).astype(np.float32)
        vectors = np.empty_like(summed)
        for n in range(count):  # as the provider divides: by float(norm) of each vector
            vectors[n] = summed[n] / float(np.linalg.norm(summed[n]))
        return texts, vectors

    def check(self, texts: list[str], vectors: np.ndarray) -> None:
        expected = HashProvider(self.dimensions).embed(texts).vectors
        for n, vector in enumerate(expected):
            if not np.array_equal(vector, vectors[n]):
                raise AssertionError(f"row {n}: the bulk vector differs from HashProvider's")


_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
COPY_ROWS = ("COPY search_index (object_type, object_id, yacht_id, search_text, embedding, "
             "embedding_status, embedding_model, embedding_provider, embedded_at) "
             "FROM STDIN WITH (FORMAT binary)")
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def _field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def yacht_payload(job: tuple[int, str, int, int, str, str]) -> bytes:
    """Binary COPY of one yacht's embedded rows (run in a helper process)."""
    seed, yacht_id, count, dimensions, model, provider = job
    texts, vectors = RowMaker(dimensions).rows(count, seed)
    yacht = uuid.UUID(yacht_id).bytes
    rng = random.Random(seed)
    status, model_b, provider_b = b"embedded", model.encode(), provider.encode()
    now = int((datetime.now(UTC) - _EPOCH_2000).total_seconds() * 1_000_000)
    vector_head = struct.pack(">ihh", 4 + 4 * dimensions, dimensions, 0)
    big_endian = vectors.astype(">f4")
    parts = [_HEADER]
    for n, text in enumerate(texts):
        parts += [struct.pack(">h", 9), _field(OBJECT_TYPES[n % len(OBJECT_TYPES)].encode()),
                  _field(uuid.UUID(int=rng.getrandbits(128), version=4).bytes),
                  _field(yacht), _field(text.encode()),
                  vector_head, big_endian[n].tobytes(),
                  _field(status), _field(model_b), _field(provider_b),
                  struct.pack(">iq", 8, now)]
    parts.append(_TRAILER)
    return b"".join(parts)


class Fleet:
    """The yachts and their embedded rows, loaded a yacht at a time."""

    def __init__(self, url: str, yachts: int, per_yacht: int, seed: int) -> None:
        self.url = url
        self.per_yacht = per_yacht
        self.seed = seed
        rng = random.Random(seed)
        self.ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(yachts)]
        self.loaded = 0
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO yachts (id, name) SELECT id, 'Bench ' || n "
                        "FROM unnest(%s::uuid[]) WITH ORDINALITY AS y (id, n)", (self.ids,))

    def check_vectors(self) -> None:
        maker = RowMaker(serve_defaults().dimensions)
        texts, vectors = maker.rows(50, self.seed)
        maker.check(texts, vectors)

    def load(self, yachts: int) -> float:
        """Load yachts until `yachts` hold rows; the seconds it took (with VACUUM ANALYZE)."""
        began = time.monotonic()
        settings = serve_defaults()
        jobs = [(self.seed * 100_003 + n, self.ids[n], self.per_yacht, settings.dimensions,
                 settings.model, settings.provider) for n in range(self.loaded, yachts)]
        # One helper process makes the rows while this one COPYs: the server's backend uses
        # the other core.
        with multiprocessing.get_context("spawn").Pool(1) as pool, self.conn.cursor() as cur:
            for done, payload in enumerate(pool.imap(yacht_payload, jobs), start=1):
                cur.copy_expert(COPY_ROWS, _Reader(payload))
                if done % 10 == 0 or done == len(jobs):
                    log(f"  {self.loaded + done} yachts loaded "
                        f"({time.monotonic() - began:.0f} s)")
        self.loaded = yachts
        with self.conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE search_index")
        return time.monotonic() - began

    def sizes(self) -> dict[str, Any]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM search_index")
            (rows,) = cur.fetchone()
            cur.execute("SELECT pg_relation_size(oid), pg_total_relation_size(oid), "
                        "pg_total_relation_size(reltoastrelid) FROM pg_class "
                        "WHERE relname = 'search_index'")
            heap, total, toast = cur.fetchone()
        return {"rows": rows, "heap_mb": round(heap / 2**20), "toast_mb": round(toast / 2**20),
                "table_with_indexes_mb": round(total / 2**20)}

    def add_clicks(self, yacht_id: str) -> None:
        """Clicks of the last week, so that the yacht has top queries to pre-warm."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT object_type, object_id FROM search_index WHERE yacht_id = %s "
                        "LIMIT 1", (yacht_id,))
            object_type, object_id = cur.fetchone()
            for rank, text in enumerate(TOP_QUERIES):
                cur.execute(
                    "INSERT INTO search_click_events (org_id, yacht_id, user_id, query_text, "
                    "query_normalized, clicked_object_type, clicked_object_id, "
                    "click_timestamp) SELECT %s, %s, %s, %s, %s, %s, %s, "
                    "now() - make_interval(hours => g) FROM generate_series(1, %s) AS g",
                    (ORG_ID, yacht_id, USER_ID, text, text, object_type, object_id,
                     len(TOP_QUERIES) + 1 - rank))

    def close(self) -> None:
        self.conn.close()


class _Reader:
    """A file-like view of bytes for copy_expert, without a BytesIO copy."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else self.at + size
        chunk = self.view[self.at:end]
        self.at += len(chunk)
        return bytes(chunk)

    readline = read


# --- Queries -------------------------------------------------------------------------------


class Queries:
    """Search texts as a user types them (1-3 words of the vocabulary), none twice."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seen: set[str] = set()

    def fresh(self) -> str:
        while True:
            words = self.rng.choices(WORDS, k=self.rng.choice((1, 2, 2, 3, 3)))
            text = " ".join(words)
            if text not in self.seen and text not in TOP_QUERIES:
                self.seen.add(text)
                return text


# --- The server (a child process) ----------------------------------------------------------

ORG_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
USER_ID = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"


class Probes:
    """Durations (ms) recorded in the server process, taken and cleared by the client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.values.setdefault(name, []).append(seconds * 1000)

    def take(self) -> dict[str, list[float]]:
        with self.lock:
            values, self.values = self.values, {}
        return values

    def timed(self, name: str, function):
        def call(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - began)
        return call

    def timed_async(self, name: str, function):
        async def call(*args, **kwargs):
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - began)
        return call


class TimedApp:
    """The app, each HTTP request timed from reaching it to its last body message sent."""

    def __init__(self, app, probes: Probes) -> None:
        self.app = app
        self.probes = probes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == PROBE_PATH:
            body = json.dumps(self.probes.take()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        began = time.perf_counter()
        name = "request " + scope["path"]

        async def timed_send(message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.probes.add(name, time.perf_counter() - began)

        await self.app(scope, receive, timed_send)


class _TimedProvider:
    def __init__(self, provider, probes: Probes) -> None:
        self.name = provider.name
        self.embed = probes.timed("embed", provider.embed)
        self.close = provider.close


def serve_main(argv: list[str]) -> int:
    """The child: `f1backfill serve`'s door and app, with probes, under uvicorn."""
    import uvicorn

    from f1backfill.frontdoor.app import create_app
    from f1backfill.frontdoor.server import build_door

    parser = argparse.ArgumentParser(prog="search_latency.py _serve")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = ServeSettings.from_env(os.environ)
    settings.validate()
    door = build_door(settings, settings.redis_url)
    probes = Probes()
    door.searcher.provider = _TimedProvider(door.searcher.provider, probes)
    door.index.nearest = probes.timed("nearest", door.index.nearest)
    door.index.signatures = probes.timed("signatures", door.index.signatures)
    door.prewarm_login = probes.timed_async("prewarm", door.prewarm_login)
    door.verifier.verify = probes.timed_async("verify token", door.verifier.verify)
    door.cache.generation = probes.timed_async("redis generation", door.cache.generation)
    door.cache.get = probes.timed_async("redis get", door.cache.get)
    app = TimedApp(create_app(door), probes)
    # As serve() runs it (frontdoor/server.py), logging warnings only.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, server_header=False)
    return 0


class Door:
    """The server child and an HTTP client of it."""

    def __init__(self, database_url: str, redis_url: str, secret: str) -> None:
        self.secret = secret
        port = _free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "JWT_SECRET": secret, "LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "_serve", "--port", str(port)], env=env,
            stdin=subprocess.DEVNULL)
        self.port = port
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self.tokens: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become healthy in 60 s")
            time.sleep(0.1)
        self.probes()  # the health checks' own

    def token(self, yacht_id: str) -> str:
        if yacht_id not in self.tokens:
            now = int(time.time())
            self.tokens[yacht_id] = jwt.encode(
                {"yacht_id": yacht_id, "user_id": USER_ID, "org_id": ORG_ID, "role": ROLE,
                 "sub": USER_ID, "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS},
                self.secret, algorithm="HS256")
        return self.tokens[yacht_id]

    def search(self, yacht_id: str, q: str) -> tuple[dict[str, Any], float]:
        """The answer and the client's round trip in ms."""
        headers = {"Authorization": f"Bearer {self.token(yacht_id)}"}
        began = time.perf_counter()
        response = self.client.get("/api/f1/search", params={"q": q, "limit": TOP_K},
                                   headers=headers)
        elapsed = (time.perf_counter() - began) * 1000
        response.raise_for_status()
        return response.json(), elapsed

    def probes(self) -> dict[str, list[float]]:
        return self.client.get(PROBE_PATH).json()

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- The load generator (a child process) --------------------------------------------------


def load_main(argv: list[str]) -> int:
    """The child: `--connections` keep-alive connections sending the given GETs, closed
    loop, for `--seconds` after `--warmup` seconds; prints one JSON line."""
    parser = argparse.ArgumentParser(prog="search_latency.py _load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", required=True, help="JSON file: [[path, token], ...]")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    raw = [f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
           .encode() for path, token in json.loads(Path(args.requests).read_text())]
    print(json.dumps(asyncio.run(_load(args, raw))), flush=True)
    return 0


async def _load(args, raw: list[bytes]) -> dict[str, Any]:
    began = time.perf_counter()
    start, end = began + args.warmup, began + args.warmup + args.seconds
    done: list[tuple[float, float]] = []
    counts = {"requests": 0, "not_200": 0, "cached": 0}

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
        n = offset
        try:
            while True:
                sent = time.perf_counter()
                if sent >= end:
                    return
                writer.write(raw[n % len(raw)])
                n += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                finished = time.perf_counter()
                counts["requests"] += 1
                counts["not_200"] += head[9:12] != b"200"
                counts["cached"] += b'"cached":true' in body
                done.append((finished, finished - sent))
        finally:
            writer.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(connection(n * 7919) for n in range(args.connections)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    window = [latency * 1000 for finished, latency in done if start <= finished < end]
    return {"connections": args.connections, "window_seconds": args.seconds,
            "requests_in_window": len(window),
            "per_second": round(len(window) / args.seconds, 1),
            "latency_at_client": summary(window), **counts,
            "elapsed_seconds": round(time.perf_counter() - began, 3),
            "client_cpu_seconds": round(after.ru_utime + after.ru_stime
                                        - before.ru_utime - before.ru_stime, 3)}


# --- The measurements ----------------------------------------------------------------------


def uncached_phase(door: Door, yachts: list[str], queries: Queries, count: int,
                   rng: random.Random, *, each_yacht_once: bool = False) -> dict[str, Any]:
    """`count` searches the cache cannot hold (or one per yacht), with where time went."""
    door.probes()
    chosen = list(yachts) if each_yacht_once else [rng.choice(yachts) for _ in range(count)]
    client, hits = [], 0
    for yacht in chosen:
        body, elapsed = door.search(yacht, queries.fresh())
        if body["cached"]:
            raise AssertionError("a fresh query was answered from the cache")
        hits += len(body["results"])
        client.append(elapsed)
    probes = door.probes()
    server = probes.get("request /api/f1/search", [])
    embed, nearest = probes.get("embed", []), probes.get("nearest", [])
    if not len(server) == len(embed) == len(nearest) == len(chosen):
        raise AssertionError(f"{len(chosen)} searches, but {len(server)} timed, {len(embed)} "
                             f"embeddings, {len(nearest)} nearest")
    rest = [s - e - n for s, e, n in zip(server, embed, nearest, strict=True)]
    return {"at_server": summary(server), "at_client": summary(client),
            "query_embedding": summary(embed), "database_nearest": summary(nearest),
            "rest_of_request": summary(rest),
            "signature_reads": summary(probes.get("signatures", [])),
            "mean_hits": round(hits / len(chosen), 2)}


def cached_pairs(door: Door, yachts: list[str], queries: Queries, count: int,
                 rng: random.Random) -> list[tuple[str, str]]:
    """`count` (yacht, query) searches, computed once so that they are cached."""
    pairs = [(rng.choice(yachts), queries.fresh()) for _ in range(count)]
    for yacht, text in pairs:
        door.search(yacht, text)
    door.probes()
    return pairs


def cached_phase(door: Door, pairs: list[tuple[str, str]], count: int,
                 rng: random.Random) -> dict[str, Any]:
    client = []
    for _ in range(count):
        yacht, text = rng.choice(pairs)
        body, elapsed = door.search(yacht, text)
        if not body["cached"]:
            raise AssertionError("a repeated search was not answered from the cache")
        client.append(elapsed)
    probes = door.probes()
    server = probes.get("request /api/f1/search", [])
    if len(server) != count or probes.get("embed"):
        raise AssertionError("the cached searches were not all timed, or one was computed")
    return {"at_server": summary(server), "at_client": summary(client)}


def throughput_phase(door: Door, pairs: list[tuple[str, str]], levels: list[int],
                     seconds: float, redis_pid: int) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    requests = [[f"/api/f1/search?{urlencode({'q': text, 'limit': TOP_K})}",
                 door.token(yacht)] for yacht, text in pairs]
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(requests, file)
        file.flush()
        for connections in levels:
            for yacht, text in pairs:  # cached again (the entries live CACHE_TTL_SEARCH)
                door.search(yacht, text)
            door.probes()
            server_cpu, redis_cpu = door.cpu_seconds(), _cpu(redis_pid)
            began = time.monotonic()
            run = subprocess.run(
                [sys.executable, __file__, "_load", "--port", str(door.port), "--requests",
                 file.name, "--connections", str(connections), "--seconds", str(seconds)],
                capture_output=True, text=True, timeout=seconds + 120)
            if run.returncode != 0:
                raise RuntimeError(f"the load generator failed: {run.stderr[-2000:]}")
            wall = time.monotonic() - began
            result = json.loads(run.stdout)
            server_cpu, redis_cpu = door.cpu_seconds() - server_cpu, _cpu(redis_pid) - redis_cpu
            server = door.probes().get("request /api/f1/search", [])
            result.update({
                "server_cpu_seconds": round(server_cpu, 3),
                "server_cpu_ms_per_request": round(server_cpu * 1000 / result["requests"], 3),
                "server_cpu_share_of_one_core": round(server_cpu / wall, 2),
                "redis_cpu_seconds": round(redis_cpu, 3),
                "client_cpu_share_of_one_core": round(result["client_cpu_seconds"]
                                                      / result["elapsed_seconds"], 2),
                "at_server": summary(server)})
            log(f"  {connections} connections: {result['per_second']:,.0f} cached searches/s; "
                f"server CPU {result['server_cpu_share_of_one_core']} of a core, "
                f"{result['server_cpu_ms_per_request']} ms a request; client CPU "
                f"{result['client_cpu_share_of_one_core']} of a core")
            results.append(result)
    return results


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def prewarm_phase(door: Door, fleet: Fleet, rds: redis.Redis, yachts: list[str],
                  runs: int) -> dict[str, Any]:
    """POST /api/f1/session until every key of its queries is in Redis, `runs` times."""
    settings = serve_defaults()
    until_keys, at_server = [], []
    for n in range(runs):
        yacht = yachts[n % len(yachts)]
        rds.incr(generation_key(yacht))  # a re-embed: nothing of the yacht is cached
        generation = int(rds.get(generation_key(yacht)))
        texts = login_queries(list(TOP_QUERIES), settings.max_query_chars)
        keys = [search_key(yacht, ROLE, generation, text, settings.default_limit)
                for text in dict.fromkeys(texts)]
        door.probes()
        began = time.perf_counter()
        response = door.client.post("/api/f1/session",
                                    headers={"Authorization": f"Bearer {door.token(yacht)}"})
        if response.status_code != 202:
            raise AssertionError(f"POST /api/f1/session answered {response.status_code}")
        deadline = began + 60
        while rds.exists(*keys) < len(keys):
            if time.perf_counter() > deadline:
                raise AssertionError("the pre-warm did not cache every query in 60 s")
            time.sleep(0.001)
        until_keys.append((time.perf_counter() - began) * 1000)
        waited = time.monotonic() + 10
        while not (probes := door.probes()).get("prewarm") and time.monotonic() < waited:
            time.sleep(0.01)
        at_server += probes.get("prewarm", [])
    return {"queries": len(keys), "until_all_keys_in_redis": summary(until_keys),
            "prewarm_login_at_server": summary(at_server)}


# --- Exact scan against HNSW ---------------------------------------------------------------

# The exact scan as the product wrote it before this benchmark: each row's vector, stored
# out of line, was read three times (vector_dims in WHERE, the sort key, the score) and a
# snippet cut from every row before the top 20 were chosen. Kept to show what the rewrite
# (`search_nearest`: one read, snippets of the top rows only) saves, on the same rows.
SQL_WHAT_IFS = {
    "before_three_vector_reads_per_row": """
SELECT object_type, object_id, 1 - (embedding <=> %(vector)s::vector) AS score,
       left(search_text, %(snippet_chars)s)
FROM search_index
WHERE yacht_id = %(yacht_id)s AND embedding_status = 'embedded'
  AND (%(object_types)s::text[] IS NULL OR object_type = ANY (%(object_types)s::text[]))
  AND embedding_model = %(model)s
  AND (embedding_provider = %(provider)s OR embedding_provider IS NULL)
  AND vector_dims(embedding) = %(dimensions)s
ORDER BY embedding <=> %(vector)s::vector, object_type, object_id
LIMIT %(limit)s
""",
}

HNSW_QUERY = """
SELECT object_type, object_id, 1 - (embedding <=> %(vector)s::vector) AS score
FROM search_index
WHERE yacht_id = %(yacht_id)s AND embedding_status = 'embedded'
  AND embedding_model = %(model)s
  AND (embedding_provider = %(provider)s OR embedding_provider IS NULL)
ORDER BY embedding <=> %(vector)s::vector
LIMIT %(limit)s
"""


def vector_literal(vector: np.ndarray) -> str:
    """As SearchIndex.nearest writes the query vector."""
    return "[" + ",".join(map(repr, map(float, vector))) + "]"


def index_comparison(url: str, yachts: list[str], queries: Queries, count: int,
                     rng: random.Random, ef_search: list[int], build_memory: str, *,
                     hnsw: bool = True) -> dict[str, Any]:
    settings = serve_defaults()
    provider = HashProvider(settings.dimensions)
    cases = []
    for _ in range(count):
        text = queries.fresh()
        (vector,) = provider.embed([text]).vectors
        cases.append({"yacht_id": rng.choice(yachts), "vector": vector_literal(vector),
                      "model": settings.model, "provider": settings.provider,
                      "dimensions": settings.dimensions, "object_types": None,
                      "limit": TOP_K, "snippet_chars": 200})
    literal_ms = []
    for _ in range(200):
        began = time.perf_counter()
        vector_literal(vector)
        literal_ms.append((time.perf_counter() - began) * 1000)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    result: dict[str, Any] = {"queries": count, "query_vector_literal": summary(literal_ms)}
    try:
        with conn.cursor() as cur:
            plan = _explain(cur, query("search_nearest"), cases[0], analyze=True)
            print("-- EXPLAIN (ANALYZE, BUFFERS) search_nearest, no HNSW index:\n" + plan,
                  file=sys.stderr, flush=True)
            exact, exact_ms = _run(cur, query("search_nearest"), cases)
            result["exact"] = {"latency": summary(exact_ms), "plan": _plan_nodes(plan)}
            log(f"  exact: p50 {result['exact']['latency']['p50_ms']} ms, "
                f"p99 {result['exact']['latency']['p99_ms']} ms")
            cur.execute(query("search_signatures"), cases[0])
            signature_ms = []
            for params in cases[:50]:
                began = time.perf_counter()
                cur.execute(query("search_signatures"), params)
                cur.fetchall()
                signature_ms.append((time.perf_counter() - began) * 1000)
            result["search_signatures"] = summary(signature_ms)
            what_ifs = {}
            for name, sql in SQL_WHAT_IFS.items():
                found, ms = _run(cur, sql, cases)
                same = sum(f == e for f, e in zip(found, exact, strict=True))
                what_ifs[name] = {"latency": summary(ms), "same_results": f"{same}/{count}"}
                log(f"  what-if {name}: p50 {what_ifs[name]['latency']['p50_ms']} ms, "
                    f"same results {same}/{count}")
            result["exact_what_ifs"] = what_ifs
            if not hnsw:
                return result

            cur.execute(f"SET maintenance_work_mem = '{build_memory}'")
            cur.execute("SET max_parallel_maintenance_workers = 1")  # 2 processes
            log(f"  building the HNSW index (maintenance_work_mem {build_memory}) ...")
            began = time.monotonic()
            cur.execute("CREATE INDEX bench_hnsw ON search_index "
                        "USING hnsw (embedding vector_cosine_ops)")
            built = time.monotonic() - began
            cur.execute("SELECT pg_relation_size('bench_hnsw')")
            size = cur.fetchone()[0]
            cur.execute("ANALYZE search_index")
            result["hnsw_index"] = {"build_seconds": round(built, 1),
                                    "size_mb": round(size / 2**20),
                                    "m": 16, "ef_construction": 64,
                                    "maintenance_work_mem": build_memory,
                                    "parallel_workers": 1,
                                    "notices": [n.strip() for n in conn.notices]}
            log(f"  built in {built:.0f} s, {size / 2**20:,.0f} MiB")
            plan = _explain(cur, query("search_nearest"), cases[0], analyze=False)
            result["product_query_plan_with_hnsw_present"] = _plan_nodes(plan)
            print("-- EXPLAIN search_nearest with the HNSW index present:\n" + plan,
                  file=sys.stderr, flush=True)

            variants = [("iterative_scan_off", "off", ef_search[0])]
            variants += [(f"relaxed_order_ef_search_{ef}", "relaxed_order", ef)
                         for ef in ef_search]
            for name, mode, ef in variants:
                # enable_sort off: the yacht_id index + sort (the exact plan) is disabled,
                # so the planner takes the HNSW index's order.
                setup = [f"SET hnsw.iterative_scan = {mode}", f"SET hnsw.ef_search = {ef}",
                         "SET enable_sort = off"]
                for statement in setup:
                    cur.execute(statement)
                plan = _explain(cur, HNSW_QUERY, cases[0], analyze=True)
                print(f"-- EXPLAIN (ANALYZE, BUFFERS) HNSW, {name}:\n{plan}", file=sys.stderr,
                      flush=True)
                found, ms = _run(cur, HNSW_QUERY, cases)
                cur.execute("RESET ALL")
                recall = _recall(exact, found)
                result[name] = {"latency": summary(ms), **recall, "plan": _plan_nodes(plan)}
                log(f"  {name}: p50 {result[name]['latency']['p50_ms']} ms, "
                    f"p99 {result[name]['latency']['p99_ms']} ms, recall@{TOP_K} "
                    f"{recall['recall_at_20']}, rows {recall['mean_rows']}")
            cur.execute("DROP INDEX bench_hnsw")
    finally:
        conn.close()
    return result


# The server prints the query vector in its own float format: 1,536 numbers per plan line.
VECTOR_IN_PLAN = re.compile(r"'\[[-0-9.e,+]*\]'")


def _explain(cur, sql: str, params: dict[str, Any], *, analyze: bool) -> str:
    cur.execute(("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN ") + sql, params)
    plan = "\n".join(row[0] for row in cur.fetchall())
    return VECTOR_IN_PLAN.sub("'[the query vector]'", plan)


def _plan_nodes(plan: str) -> str:
    """The plan's node names, outermost first: 'Limit > Sort > Bitmap Heap Scan ...'."""
    nodes = []
    for line in plan.splitlines():
        text = line.strip().removeprefix("->").strip()
        if text and "(cost=" in text:
            nodes.append(text.split("  (cost=")[0])
    return " > ".join(nodes)


def _run(cur, sql: str, cases: list[dict[str, Any]]
         ) -> tuple[list[list[tuple[str, str, float]]], list[float]]:
    results, ms = [], []
    for params in cases:
        began = time.perf_counter()
        cur.execute(sql, params)
        rows = cur.fetchall()
        ms.append((time.perf_counter() - began) * 1000)
        results.append([(row[0], str(row[1]), float(row[2])) for row in rows])
    return results, ms


def _recall(exact: list[list[tuple]], found: list[list[tuple]]) -> dict[str, Any]:
    """recall@k against the exact top k; `ties counted`: a row scored as high as the
    exact k-th is as right as the one the exact scan happened to keep."""
    strict, tied, rows, short = [], [], [], 0
    for truth, got in zip(exact, found, strict=True):
        if not truth:
            continue
        keys = {(t, i) for t, i, _ in truth}
        kth = truth[-1][2]
        strict.append(sum((t, i) in keys for t, i, _ in got) / len(truth))
        tied.append(min(1.0, sum(score >= kth - 1e-6 for _, _, score in got) / len(truth)))
        rows.append(len(got))
        short += len(got) < len(truth)
    return {"recall_at_20": round(statistics.fmean(strict), 4),
            "recall_at_20_ties_counted": round(statistics.fmean(tied), 4),
            "min_recall_at_20": round(min(strict), 4),
            "mean_rows": round(statistics.fmean(rows), 2),
            "queries_with_fewer_rows": short}


# --- The stages ----------------------------------------------------------------------------


def stage(door: Door, fleet: Fleet, rds: redis.Redis, args, queries: Queries,
          rng: random.Random, *, fleet_stage: bool, redis_pid: int) -> dict[str, Any]:
    yachts = fleet.ids[:fleet.loaded]
    out: dict[str, Any] = {"yachts": len(yachts), **fleet.sizes()}
    if fleet_stage:
        log("  uncached, each yacht's first search (its signature read too)")
        out["uncached_first_search_of_each_yacht"] = uncached_phase(
            door, yachts, queries, 0, rng, each_yacht_once=True)
    else:
        door.search(yachts[0], queries.fresh())  # the signature read, not measured
        door.probes()
    log(f"  uncached: {args.requests} searches")
    out["uncached"] = uncached_phase(door, yachts, queries, args.requests, rng)
    log(f"  cached: {args.requests} searches")
    pairs = cached_pairs(door, yachts, queries, args.cached_pairs, rng)
    out["cached"] = cached_phase(door, pairs, args.requests, rng)
    for name in ("uncached", "cached"):
        at = out[name]["at_server"]
        log(f"  {name}: at the server p50 {at['p50_ms']} / p95 {at['p95_ms']} / "
            f"p99 {at['p99_ms']} ms")
    log(f"  throughput: {args.concurrency} connections, {args.throughput_seconds} s each")
    out["cached_throughput"] = throughput_phase(door, pairs, args.concurrency,
                                                args.throughput_seconds, redis_pid)
    log(f"  pre-warm: {args.prewarm_runs} logins")
    prewarmed = yachts[:max(1, min(len(yachts), args.prewarm_runs))]
    for yacht in prewarmed:
        fleet.add_clicks(yacht)
    out["prewarm"] = prewarm_phase(door, fleet, rds, prewarmed, args.prewarm_runs)
    log(f"  pre-warm of {out['prewarm']['queries']} queries: until all keys in Redis p50 "
        f"{out['prewarm']['until_all_keys_in_redis']['p50_ms']} ms")
    return out


def targets_of(stages: dict[str, Any]) -> dict[str, Any]:
    def worst(path: tuple[str, ...]) -> float:
        values = []
        for result in stages.values():
            value = result
            for key in path:
                value = value[key]
            values.append(value)
        return max(values)

    best_rate = min(max(t["per_second"] for t in result["cached_throughput"])
                    for result in stages.values())
    targets = {
        "cached_p99_ms_at_server": {"value": worst(("cached", "at_server", "p99_ms")),
                                    "target": TARGET_CACHED_P99_MS, "op": "<="},
        "uncached_p99_ms_at_server": {"value": worst(("uncached", "at_server", "p99_ms")),
                                      "target": TARGET_UNCACHED_P99_MS, "op": "<="},
        "cached_searches_per_second": {"value": best_rate,
                                       "target": TARGET_CACHED_PER_SECOND, "op": ">="},
    }
    for check in targets.values():
        value, target = check["value"], check["target"]
        check["met"] = value <= target if check["op"] == "<=" else value >= target
    return targets


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        return serve_main(argv[1:])
    if argv[:1] == ["_load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yachts", type=int, default=134)
    parser.add_argument("--per-yacht", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=1000,
                        help="searches timed per phase (uncached, cached)")
    parser.add_argument("--cached-pairs", type=int, default=50,
                        help="distinct cached searches the cached phases repeat")
    parser.add_argument("--concurrency", default="1,4,16,64",
                        help="load-generator connections, one run each (comma-separated)")
    parser.add_argument("--throughput-seconds", type=float, default=8.0)
    parser.add_argument("--prewarm-runs", type=int, default=5)
    parser.add_argument("--index-queries", type=int, default=200,
                        help="queries of the exact-scan-against-HNSW comparison")
    parser.add_argument("--ef-search", default="40,100,400",
                        help="hnsw.ef_search values tried with relaxed_order")
    parser.add_argument("--no-hnsw", action="store_true",
                        help="measure the exact scan only: no HNSW index is built")
    parser.add_argument("--shared-buffers", default="8GB",
                        help="PostgreSQL's shared_buffers: enough for every yacht's rows "
                             "(6.2 GB at 670,000), a third of this machine's RAM")
    parser.add_argument("--build-memory", default="6GB",
                        help="maintenance_work_mem of the HNSW build (the graph must fit)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    ef_search = [int(n) for n in args.ef_search.split(",")]

    began = time.monotonic()
    settings = serve_defaults()
    rows = args.yachts * args.per_yacht
    need = rows * (settings.dimensions * 4 + 2_000) * 2.2  # table + HNSW, with headroom
    free_disk = shutil.disk_usage(tempfile.gettempdir()).free
    if need > free_disk:
        parser.error(f"{rows:,} rows need about {need / 2**30:.0f} GiB; "
                     f"{free_disk / 2**30:.0f} GiB are free in {tempfile.gettempdir()}")
    secret = secrets.token_hex(32)
    rng, queries = random.Random(args.seed), Queries(args.seed)
    stages: dict[str, Any] = {}
    result: dict[str, Any] = {}
    server = LocalPostgres.start(settings={"shared_buffers": args.shared_buffers})
    try:
        with LocalRedis.start() as local_redis:
            url = server.create_database("bench_search")
            migrate(url, dimensions=settings.dimensions)
            fleet = Fleet(url, args.yachts, args.per_yacht, args.seed)
            rds = redis.Redis.from_url(local_redis.url)
            try:
                fleet.check_vectors()
                for yachts in dict.fromkeys((1, args.yachts)):
                    name = f"{yachts * args.per_yacht}_rows"
                    log(f"== {name}: loading {yachts} yacht(s) of {args.per_yacht:,} rows")
                    loaded = fleet.load(yachts)
                    door = Door(url, local_redis.url, secret)
                    try:
                        stages[name] = stage(door, fleet, rds, args, queries, rng,
                                             fleet_stage=yachts > 1,
                                             redis_pid=local_redis.process.pid)
                    finally:
                        door.close()
                    stages[name]["load_seconds"] = round(loaded, 1)
                log(f"== the exact scan{'' if args.no_hnsw else ' against HNSW'} at "
                    f"{fleet.loaded * args.per_yacht:,} rows")
                result = index_comparison(url, fleet.ids[:fleet.loaded], queries,
                                          args.index_queries, rng, ef_search,
                                          args.build_memory, hnsw=not args.no_hnsw)
            finally:
                rds.close()
                fleet.close()
    finally:
        server.stop()

    targets = targets_of(stages)
    print(json.dumps({
        "benchmark": "search_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "free_disk_gb": round(free_disk / 2**30)},
        "settings": {"yachts": args.yachts, "per_yacht": args.per_yacht,
                     "requests": args.requests, "cached_pairs": args.cached_pairs,
                     "concurrency": args.concurrency,
                     "throughput_seconds": args.throughput_seconds,
                     "dimensions": settings.dimensions, "model": settings.model,
                     "provider": settings.provider, "limit": TOP_K,
                     "shared_buffers": args.shared_buffers, "vectors": "hash provider"},
        "stages": stages,
        "exact_vs_hnsw": result,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "seconds": round(time.monotonic() - began, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
