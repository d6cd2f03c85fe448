// The edge cache in the Workers runtime: what it serves, to whom, and what it never does.
import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { EDGE_CACHE_CONTROL, MAX_CACHED_BODY_BYTES } from "../src/cache";
import { searchQuery } from "../src/querytext";
import {
  OTHER_YACHT, YACHT, b64url, bearer, call, claims, fakeOrigin, token, type FakeOrigin, type OriginReply,
  type OriginRequest,
} from "./support";

let origin: FakeOrigin;

/** The origin's search answer: JSON, or with Accept: text/event-stream an event stream. */
function searchAnswer(request: OriginRequest): OriginReply {
  const url = new URL(request.path, "https://origin");
  const query = searchQuery(url.searchParams.get("q") ?? "", 200);
  const id = crypto.randomUUID();
  const hits = [{ object_type: "equipment", object_id: "e1", score: 0.82, snippet: "MTU fuel filter" }];
  if ((request.headers["accept"] ?? "").includes("text/event-stream")) {
    const events = hits.map((hit, i) => `event: result\ndata: ${JSON.stringify({ ...hit, position: i + 1 })}\n\n`);
    events.push(`event: done\ndata: ${JSON.stringify({ search_id: id, query, count: hits.length, cached: false })}\n\n`);
    return { body: events.join(""), headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" } };
  }
  return {
    body: JSON.stringify({ search_id: id, query, results: hits, cached: false }),
    headers: { "content-type": "application/json", "x-request-id": id, server: "uvicorn" },
  };
}

const UNAUTHORIZED: OriginReply = {
  status: 401,
  body: '{"error":"unauthorized"}',
  headers: { "content-type": "application/json", "www-authenticate": "Bearer" },
};

beforeEach(() => {
  origin = fakeOrigin();
  origin.reply = searchAnswer;
});

describe("a verified search", () => {
  it("misses, then hits with the same body and the origin's headers", async () => {
    const auth = bearer(await token());
    const first = await call("/api/f1/search?q=Oil%20Filter&limit=5", auth);
    expect(first.status).toBe(200);
    expect(first.headers.get("X-Cache")).toBe("MISS");
    expect(first.headers.get("Cache-Control")).toBe(EDGE_CACHE_CONTROL);

    const second = await call("/api/f1/search?q=oil++filter+&limit=5", auth);
    expect(second.headers.get("X-Cache")).toBe("HIT");
    expect(second.body).toBe(first.body);
    expect(second.headers.get("Content-Type")).toBe("application/json");
    expect(second.headers.get("X-Request-Id")).toBe(first.headers.get("X-Request-Id"));
    expect(second.headers.get("Server")).toBe("uvicorn");
    expect(second.headers.get("Cache-Control")).toBe("private, max-age=60");
    expect(second.headers.get("Vary")).toBe("Authorization, Accept");
    expect(origin.requests).toHaveLength(1);
  });

  it("is keyed by the token's role and yacht, and by limit", async () => {
    await call("/api/f1/search?q=pump", bearer(await token()));
    for (const other of [claims({ role: "captain" }), claims({ yacht_id: OTHER_YACHT })]) {
      const answer = await call("/api/f1/search?q=pump", bearer(await token(other)));
      expect(answer.headers.get("X-Cache")).toBe("MISS");
    }
    expect((await call("/api/f1/search?q=pump&limit=21", bearer(await token()))).headers.get("X-Cache")).toBe("MISS");
    // The default limit (20) named or not is one key; the yacht's UUID in any case too.
    expect((await call("/api/f1/search?q=pump&limit=20", bearer(await token()))).headers.get("X-Cache")).toBe("HIT");
    const upper = await token(claims({ yacht_id: YACHT.toUpperCase() }));
    expect((await call("/api/f1/search?q=pump", bearer(upper))).headers.get("X-Cache")).toBe("HIT");
    expect(origin.requests).toHaveLength(4);
  });

  it("ignores a yacht named in the query string: the token's is the key", async () => {
    await call("/api/f1/search?q=pump", bearer(await token(claims({ yacht_id: OTHER_YACHT }))));
    const answer = await call(`/api/f1/search?q=pump&yacht_id=${OTHER_YACHT}`, bearer(await token()));
    expect(answer.headers.get("X-Cache")).toBeNull(); // an unknown parameter: passed through
    expect(origin.requests).toHaveLength(2);
  });

  it("misses after the yacht's generation is bumped", async () => {
    const auth = bearer(await token());
    await call("/api/f1/search?q=pump", auth);
    expect((await call("/api/f1/search?q=pump", auth)).headers.get("X-Cache")).toBe("HIT");
    await env.SEARCH_CACHE.put(`gen:${YACHT}`, "1");
    expect((await call("/api/f1/search?q=pump", auth)).headers.get("X-Cache")).toBe("MISS");
    expect((await call("/api/f1/search?q=pump", auth)).headers.get("X-Cache")).toBe("HIT");
    // Another yacht's bump leaves this yacht's entries alone.
    await env.SEARCH_CACHE.put(`gen:${OTHER_YACHT}`, "7");
    expect((await call("/api/f1/search?q=pump", auth)).headers.get("X-Cache")).toBe("HIT");
    expect(origin.requests).toHaveLength(2);
  });

  it("caches an event stream intact, apart from the JSON answer", async () => {
    const sse = { headers: { Authorization: `Bearer ${await token()}`, Accept: "text/event-stream" } };
    const first = await call("/api/f1/search?q=filter", sse);
    expect(first.headers.get("X-Cache")).toBe("MISS");
    const second = await call("/api/f1/search?q=filter", sse);
    expect(second.headers.get("X-Cache")).toBe("HIT");
    expect(second.body).toBe(first.body);
    expect(second.body).toMatch(/^event: result\ndata: .*\n\nevent: done\ndata: .*"query":"filter".*\n\n$/s);
    expect(second.headers.get("Content-Type")).toBe("text/event-stream; charset=utf-8");
    expect(second.headers.get("Cache-Control")).toBe(EDGE_CACHE_CONTROL);

    const json = await call("/api/f1/search?q=filter", bearer(await token()));
    expect(json.headers.get("X-Cache")).toBe("MISS");
    expect(JSON.parse(json.body).query).toBe("filter");
    expect(origin.requests).toHaveLength(2);
  });

  for (const status of [401, 403, 409, 500, 503]) {
    it(`does not cache an origin ${status}`, async () => {
      origin.reply = () => ({ status, body: '{"error":"no"}', headers: { "content-type": "application/json", "cache-control": "no-cache" } });
      const auth = bearer(await token());
      for (let i = 0; i < 2; i++) {
        const answer = await call("/api/f1/search?q=pump", auth);
        expect(answer.status).toBe(status);
        expect(answer.headers.get("X-Cache")).toBe("MISS");
        expect(answer.headers.get("Cache-Control")).toBe("no-cache");
      }
      expect(origin.requests).toHaveLength(2);
    });
  }

  it("does not cache a body over the size cap, nor one that sets a cookie", async () => {
    const auth = bearer(await token());
    const big = "x".repeat(MAX_CACHED_BODY_BYTES);
    origin.reply = (request) => {
      const answer = searchAnswer(request);
      return { ...answer, body: answer.body.replace('"cached":false', `"cached":false,"pad":"${big}"`) };
    };
    for (let i = 0; i < 2; i++) {
      const answer = await call("/api/f1/search?q=big", auth);
      expect(answer.headers.get("X-Cache")).toBe("MISS");
      expect(answer.body.length).toBeGreaterThan(MAX_CACHED_BODY_BYTES);
    }
    origin.reply = (request) => {
      const answer = searchAnswer(request);
      return { ...answer, headers: { ...answer.headers, "set-cookie": "session=abc" } };
    };
    await call("/api/f1/search?q=cookie", auth);
    expect((await call("/api/f1/search?q=cookie", auth)).headers.get("X-Cache")).toBe("MISS");
    expect(origin.requests).toHaveLength(4);
  });

  it("does not cache an answer for another query than the key's", async () => {
    origin.reply = (request) => {
      const answer = searchAnswer(request);
      return { ...answer, body: answer.body.replace(/"query":"[^"]*"/, '"query":"something else"') };
    };
    const auth = bearer(await token());
    await call("/api/f1/search?q=pump", auth);
    expect((await call("/api/f1/search?q=pump", auth)).headers.get("X-Cache")).toBe("MISS");
  });

  it("passes a repeated parameter or a refused query through, uncached", async () => {
    const auth = bearer(await token());
    for (const path of ["/api/f1/search?q=a&q=b", "/api/f1/search?q=a&limit=5&limit=6",
                        "/api/f1/search?q=oil%00filter", "/api/f1/search?q=a&limit=0",
                        "/api/f1/search?q=a&limit=abc"]) {
      for (let i = 0; i < 2; i++) {
        expect((await call(path, auth)).headers.get("X-Cache")).toBeNull();
      }
    }
    expect(origin.requests).toHaveLength(10);
  });
});

describe("KV away", () => {
  it("sends the search to the origin instead of failing it", async () => {
    const broken = {
      get: async () => { throw new Error("KV GET failed: 503"); },
      getWithMetadata: async () => { throw new Error("KV GET failed: 503"); },
      put: async () => { throw new Error("KV PUT failed: 503"); },
    } as unknown as KVNamespace;
    const answer = await call("/api/f1/search?q=pump", bearer(await token()), { ...env, SEARCH_CACHE: broken });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body).query).toBe("pump");
    expect(answer.headers.get("X-Cache")).toBeNull();
    expect(origin.requests).toHaveLength(1);
  });
});

describe("a token that does not verify", () => {
  const path = "/api/f1/search?q=pump";

  /** Caches the yacht's answer with a valid token, then lets the origin refuse everything. */
  async function primed(): Promise<void> {
    const auth = bearer(await token());
    await call(path, auth);
    expect((await call(path, auth)).headers.get("X-Cache")).toBe("HIT");
    origin.reply = () => UNAUTHORIZED;
    origin.requests = [];
  }

  async function expectRefusedAtOrigin(authorization: string): Promise<void> {
    const answer = await call(path, { headers: { Authorization: authorization } });
    expect(answer.status).toBe(401);
    expect(answer.headers.get("X-Cache")).toBeNull();
    expect(answer.headers.get("WWW-Authenticate")).toBe("Bearer");
    expect(answer.body).toBe(UNAUTHORIZED.body);
    expect(origin.requests.at(-1)?.headers["authorization"]).toBe(authorization);
  }

  it("naming another yacht (its own token's claims swapped) never gets a HIT", async () => {
    await primed();
    const mine = await token(claims({ yacht_id: OTHER_YACHT }));
    const [header, , signature] = mine.split(".");
    await expectRefusedAtOrigin(`Bearer ${header}.${b64url({ ...claims(), exp: 4102444800 })}.${signature}`);
  });

  it("signed with another secret never gets a HIT", async () => {
    await primed();
    await expectRefusedAtOrigin(`Bearer ${await token(claims(), "an-attackers-own-secret-of-32-bytes-or-more")}`);
  });

  it("with alg none never gets a HIT", async () => {
    await primed();
    const unsigned = `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ ...claims(), exp: 4102444800 })}`;
    await expectRefusedAtOrigin(`Bearer ${unsigned}.`);
    await expectRefusedAtOrigin(`Bearer ${unsigned}.c2lnbmF0dXJl`);
    const noneCase = `${b64url({ alg: "None" })}.${b64url({ ...claims(), exp: 4102444800 })}.c2ln`;
    await expectRefusedAtOrigin(`Bearer ${noneCase}`);
  });

  it("expired, or not yet valid, beyond the leeway never gets a HIT", async () => {
    await primed();
    const now = Math.floor(Date.now() / 1000);
    await expectRefusedAtOrigin(`Bearer ${await token({ ...claims(), iat: now - 7200 }, undefined, now - 3600)}`);
    await expectRefusedAtOrigin(`Bearer ${await token({ ...claims(), nbf: now + 3600 })}`);
    await expectRefusedAtOrigin(`Bearer ${await token({ ...claims(), iat: now + 3600 }, undefined, now + 7200)}`);
  });

  it("without exp, or a claim the origin requires, never gets a HIT", async () => {
    await primed();
    const secret = new TextEncoder().encode(env.JWT_SECRET!);
    const { SignJWT } = await import("jose");
    const noExp = await new SignJWT(claims()).setProtectedHeader({ alg: "HS256" }).sign(secret);
    await expectRefusedAtOrigin(`Bearer ${noExp}`);
    for (const drop of ["org_id", "user_id", "role"]) {
      const partial = claims();
      delete partial[drop];
      await expectRefusedAtOrigin(`Bearer ${await token(partial)}`);
    }
    await expectRefusedAtOrigin(`Bearer ${await token(claims({ yacht_id: "not-a-uuid" }))}`);
  });

  it("that is not a bearer JWT at all is passed through", async () => {
    await primed();
    await expectRefusedAtOrigin("Basic dXNlcjpwYXNz");
    await expectRefusedAtOrigin(`Bearer ${await token()} extra`);
    await expectRefusedAtOrigin("Bearer not-a-jwt");
  });
});

describe("everything but a search", () => {
  it("is passed to the origin untouched, whatever the token", async () => {
    origin.reply = (request) => ({
      status: 202,
      body: `{"path":"${request.path}"}`,
      headers: { "content-type": "application/json", "cache-control": "no-store", "x-origin": "yes" },
    });
    const auth = (await token());
    const cases: [string, RequestInit][] = [
      ["/api/analytics/search-click", { method: "POST", body: "{}", headers: { Authorization: `Bearer ${auth}` } }],
      ["/api/f1/search", { method: "POST", body: "{}", headers: { Authorization: `Bearer ${auth}` } }],
      ["/api/f1/search-suggest?q=pump", bearer(auth)],
      ["/api/f1/search/?q=pump", bearer(auth)],
      ["/api/f1/session", { method: "POST", headers: { Authorization: `Bearer ${auth}` } }],
      ["/api/f1/search?q=pump", {}], // no token at all
      ["/health", {}],
    ];
    for (const [path, init] of cases) {
      for (let i = 0; i < 2; i++) {
        const answer = await call(path, init);
        expect(answer.status).toBe(202);
        expect(answer.headers.get("X-Cache")).toBeNull();
        expect(answer.headers.get("Cache-Control")).toBe("no-store");
        expect(answer.headers.get("X-Origin")).toBe("yes");
      }
    }
    expect(origin.requests).toHaveLength(cases.length * 2);
  });
});
