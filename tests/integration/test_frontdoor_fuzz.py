"""1,000 malformed requests at the front door, seeded: request lines, headers, tokens, query
strings, bodies and sizes. None may get a 5xx, and the server keeps serving."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import string
import urllib.parse
import uuid

import httpx
import pytest

from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import embed_all, running_door, token_for
from tests.support.tokens import SECRET, b64url, hand_made, mint, valid_claims

REQUESTS = 1000
PATHS = ["/api/f1/search", "/api/analytics/search-click", "/api/f1/session", "/health",
         "/metrics", "/", "/api/f1/search/", "/api/f1/../f1/search", "/%00", "/api/f1/séarch"]
# Mostly the routes as they are meant to be called, so the fuzzing reaches the handlers.
ROUTES = [("GET", "/api/f1/search")] * 3 + [("POST", "/api/analytics/search-click")] * 3 + [
    ("POST", "/api/f1/session"), ("GET", "/health")]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW"]


def random_text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "éß漢\u202e\u0000\ud7ff\U0001f6a4"
    return "".join(rng.choice(alphabet) for _ in range(size))


def random_token(rng: random.Random, yacht_id: str) -> str | None:
    claims = valid_claims(yacht_id=yacht_id)
    choices = [
        lambda: None,
        lambda: token_for(yacht_id),  # valid: the fuzzing goes past auth
        lambda: token_for(yacht_id),
        lambda: token_for(yacht_id, role=rng.choice(["crew", "guest", "", "x" * 300])),
        lambda: random_text(rng, rng.randint(0, 400)),
        lambda: ".".join(b64url(rng.randbytes(rng.randint(0, 60))) for _ in range(3)),
        lambda: hand_made({"alg": rng.choice(["none", "HS256", "RS256", "", None, 7])},
                          claims),
        lambda: mint({**claims, rng.choice(list(claims)): rng.choice(
            [None, 7, [], {}, "x" * 5000, "🚤", -1e308])}, SECRET),
        lambda: mint(claims, SECRET) + rng.choice(["", ".", "..", "=", " x"]),
        lambda: hand_made({"alg": "HS256", "kid": "../../etc/passwd", "jku": "http://x"},
                          claims, lambda data: rng.randbytes(32)),
    ]
    return rng.choice(choices)()


def random_query(rng: random.Random) -> list[tuple[str, str]]:
    params = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(["q", "q", "limit", "limit", "yacht_id", "role", random_text(rng, 5)])
        value = rng.choice([
            random_text(rng, rng.randint(0, 50)), str(rng.randint(-10**12, 10**12)),
            "", "nan", "1e9", "20.5", " 20", "x" * rng.choice([200, 10_001, 20_000]),
            "'; DROP TABLE search_index;--", "%00", "\u0000" * 3, str(uuid.uuid4())])
        params.append((name, value))
    return params


def random_body(rng: random.Random, key: tuple[str, str]) -> bytes:
    object_type, object_id = key
    valid = {"query_text": "oil filter", "clicked_object_type": object_type,
             "clicked_object_id": str(object_id), "click_position": 1}
    depth = rng.choice([1, 50, 5000])
    choices = [
        lambda: b"",
        lambda: rng.randbytes(rng.randint(1, 2000)),
        lambda: json.dumps({**valid, rng.choice([*valid, "yacht_id", "extra"]): rng.choice(
            [None, -1, 2**70, "", "x" * 9000, [], {}, True, 1.5, str(uuid.uuid4())])}).encode(),
        lambda: b"[" * depth + b'"x"' + b"]" * depth,
        lambda: json.dumps(valid).encode()[: rng.randint(0, 60)],
        lambda: json.dumps(valid).encode() + rng.randbytes(5),
        lambda: b"{" * rng.randint(1, 100_000),
        lambda: json.dumps({**valid, "query_text": random_text(rng, rng.randint(1, 3000))}
                           ).encode("utf-8", "surrogatepass"),
        lambda: json.dumps(valid).encode(),
    ]
    return rng.choice(choices)()


def raw_request(rng: random.Random) -> bytes:
    """Bytes no HTTP client would send: broken request lines and headers."""
    choices = [
        lambda: rng.randbytes(rng.randint(1, 300)) + b"\r\n\r\n",
        lambda: b"GET /api/f1/search?q=oil HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 70_000
        + b"\r\n\r\n",
        lambda: b"GET /api/f1/search HTTP/9.9\r\nHost: x\r\n\r\n",
        lambda: b"GET " + b"/" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: b"POST /api/analytics/search-click HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: -5\r\n\r\n",
        lambda: b"POST /api/analytics/search-click HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        lambda: b"POST /api/analytics/search-click HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nfffffffff\r\nabc\r\n",
        lambda: b"GET /api/f1/search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x00"
                b"\r\n\r\n",
        lambda: b"GET /api/f1/search HTTP/1.1\r\nHost: x\r\nAuthorization:\r\n\r\n",
        lambda: b"GET /api/f1/search?q=%ZZ%%&limit=%C0%AF HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: b"GET /api/f1/search HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                b"Authorization: Bearer " + token_bytes(rng) + b"\r\n\r\n",
    ]
    return rng.choice(choices)()


def as_bytes(method: str, path: str, params: list[tuple[str, str]], headers: dict[str, str],
             body: bytes) -> bytes:
    query = urllib.parse.urlencode(params, encoding="utf-8", errors="surrogatepass")
    lines = [f"{method} {path}{'?' + query if query else ''} HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


def token_bytes(rng: random.Random) -> bytes:
    return rng.choice([b"a.b.c", b"", b"\x00" * 10, b"." * 1000])


def send_raw(port: int, data: bytes) -> int | None:
    """The status the server answered `data` with; None when it closed without answering,
    or waited for more (a body shorter than declared)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        with contextlib.suppress(OSError):  # the server closed before reading it all
            conn.sendall(data)
        answer = b""
        try:
            while (chunk := conn.recv(65536)) and b"\r\n" not in answer + chunk:
                answer += chunk
            answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def fleet(db, database_url):
    yacht = add_yacht(db, "Fuzz")
    keys = add_rows(db, yacht.id, 20)
    embed_all(database_url, yacht.id)
    return yacht, keys


@pytest.mark.timeout(600)
def test_a_thousand_malformed_requests_get_no_5xx_and_the_server_keeps_serving(
        fleet, database_url, redis_url):
    yacht, keys = fleet
    yacht_id = str(yacht.id)
    rng = random.Random(20261130)
    statuses: dict[int | None, int] = {}
    with running_door(database_url, redis_url) as door:
        port = int(door.url.rsplit(":", 1)[1])
        for n in range(REQUESTS):
            if n % 5 == 0:
                status = send_raw(port, raw_request(rng))
            else:
                headers = {}
                token = random_token(rng, yacht_id)
                if token is not None:
                    headers["Authorization"] = rng.choice(["Bearer ", "bearer ", "Basic ",
                                                           "Bearer  ", ""]) + token
                if rng.random() < 0.3:
                    headers["Content-Type"] = rng.choice(
                        ["application/json", "text/plain", "multipart/form-data",
                         "application/json; charset=latin-1", random_text(rng, 20)])
                if rng.random() < 0.2:
                    headers["Accept"] = rng.choice(["text/event-stream", "*/*", "x" * 500])
                method, path = rng.choice(ROUTES) if rng.random() < 0.7 else (
                    rng.choice(METHODS), rng.choice(PATHS))
                params = random_query(rng)
                body = random_body(rng, rng.choice(keys))
                try:
                    status = door.client.request(method, path, params=params, content=body,
                                                 headers=headers).status_code
                except (httpx.LocalProtocolError, UnicodeEncodeError):
                    # Bytes httpx will not send (a CR in a header, a lone surrogate): sent
                    # as they are.
                    status = send_raw(port, as_bytes(method, path, params, headers, body))
            statuses[status] = statuses.get(status, 0) + 1
            assert status is None or status < 500, (n, status, statuses)
        # Still serving, and correctly.
        answer = door.search(token_for(yacht_id), "oil filter")
        assert answer.status_code == 200
        assert answer.json()["results"]
        assert door.get("/health").status_code == 200
    # The fuzzing reached past the token and into the body checks.
    assert statuses.get(200, 0) + statuses.get(202, 0) > 20, statuses
    assert statuses.get(422, 0) > 20 and statuses.get(401, 0) > 100, statuses
    assert statuses.get(400, 0) > 50, statuses  # the broken request lines and headers
