/**
 * The search edge cache: `GET /api/f1/search` answered from Workers KV for a verified
 * token's yacht and role, everything else passed to the origin untouched.
 *
 * A request is served from or stored in the cache only when all of these hold:
 * - it is `GET /api/f1/search` with nothing but `q` and `limit`, each at most once;
 * - its bearer token verifies (auth.ts); the yacht and role come from that token only;
 * - its `q` normalises as the origin's would, and `limit` is a plain number.
 * Anything else goes to the origin exactly as it came: an invalid token is answered 401
 * there, and nothing about it is read from or written to the cache.
 *
 * The key is `cf:{yacht_id}:{role}:{generation}:{sha256(normalised q)}:{limit}`, with
 * `:sse` appended for `Accept: text/event-stream`, which the origin answers with the same
 * hits as an event stream instead of JSON. `generation` is KV `gen:{yacht_id}` (absent: 0),
 * which the origin side publishes after every re-embed of the yacht, so the next search
 * misses. Only a 200 of the expected content type, without Set-Cookie, no larger than
 * MAX_CACHED_BODY_BYTES, and whose own `query` is the normalised query the key was built
 * from, is stored, for CACHE_TTL_SECONDS.
 */
import { authConfig, ConfigError, verifyBearer, type AuthConfig } from "./auth";
import type { Env } from "./env";
import { searchQuery } from "./querytext";

export const SEARCH_PATH = "/api/f1/search";
const SSE = "text/event-stream";
const JSON_TYPE = "application/json";
// KV's shortest expiration, and the browser's max-age: a cached search is at most a minute
// old when served, on top of how long a bumped generation takes to reach every location.
export const CACHE_TTL_SECONDS = 60;
export const EDGE_CACHE_CONTROL = `private, max-age=${CACHE_TTL_SECONDS}`;
// A search answer is a few kilobytes (100 hits at most, 200-character snippets); anything
// far larger is not worth a KV write, and is never buffered beyond this.
export const MAX_CACHED_BODY_BYTES = 256 * 1024;
// KV's own limits: keys of at most 512 bytes, metadata of at most 1024 serialised.
const MAX_KEY_BYTES = 512;
const MAX_METADATA_BYTES = 1024;
// The origin refuses a longer q (422); it is never worth normalising here.
const MAX_Q_CHARS = 10_000;
const LIMIT = /^[1-9][0-9]{0,3}$/;
const GENERATION = /^(0|[1-9][0-9]{0,15})$/;
// Headers that describe one transfer, not the response, or that must never be replayed to
// another request: never stored with a cached body.
const NOT_STORED = new Set([
  "cache-control", "connection", "content-encoding", "content-length", "date", "keep-alive",
  "set-cookie", "transfer-encoding", "x-cache",
]);

/** What a cached response carries besides its body (KV metadata). */
interface Stored {
  headers: [string, string][];
}

/** A cacheable search: its key, and what the origin's answer must say to be stored. */
interface Plan {
  key: string;
  query: string;
  contentType: string;
}

/** One request: from the cache, through it, or past it to the origin. */
export async function handle(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
  let plan: Plan | null = null;
  let hit: KVNamespaceGetWithMetadataResult<ArrayBuffer, Stored> | null = null;
  try {
    plan = await cachePlan(request, env);
    if (plan !== null) hit = await env.SEARCH_CACHE.getWithMetadata<Stored>(plan.key, "arrayBuffer");
  } catch (error) {
    // KV unavailable, or a surprise: the search goes to the origin, never fails here.
    console.warn(`search edge cache: passed through (${String(error)})`);
    plan = null;
  }
  if (plan === null) return fetch(request);
  if (hit?.value && hit.metadata) {
    const headers = new Headers(hit.metadata.headers);
    return new Response(hit.value, { status: 200, headers: edgeHeaders(headers, "HIT") });
  }

  const response = await fetch(request);
  const headers = new Headers(response.headers);
  if (!storable(response, plan) || response.body === null) {
    headers.set("X-Cache", "MISS");
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  }
  // The client's copy streams at once (an event stream is not held back); the other is
  // read, up to the size cap, and stored after the response has gone.
  const [client, copy] = response.body.tee();
  ctx.waitUntil(store(env, plan, copy, response.headers));
  return new Response(client, { status: 200, statusText: response.statusText, headers: edgeHeaders(headers, "MISS") });
}

function edgeHeaders(headers: Headers, cache: "HIT" | "MISS"): Headers {
  headers.set("X-Cache", cache);
  headers.set("Cache-Control", EDGE_CACHE_CONTROL);
  // The browser may keep it for a minute: only for the same token and representation.
  for (const name of ["Authorization", "Accept"]) {
    const vary = headers.get("Vary");
    if (!(vary ?? "").toLowerCase().split(/\s*,\s*/).includes(name.toLowerCase())) {
      headers.set("Vary", vary ? `${vary}, ${name}` : name);
    }
  }
  return headers;
}

let configured: { env: Env; config: AuthConfig | null } | null = null;

/** The token configuration of these bindings, or null (logged) when it cannot verify. */
function configFor(env: Env): AuthConfig | null {
  if (configured?.env !== env) {
    let config: AuthConfig | null = null;
    try {
      config = authConfig(env);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      // Fail closed: without a way to verify tokens, nothing is cached or served from it.
      console.error(`search edge cache disabled: ${error.message}`);
    }
    configured = { env, config };
  }
  return configured.config;
}

function positiveInt(raw: string | undefined, fallback: number): number {
  return raw !== undefined && LIMIT.test(raw) ? Number(raw) : fallback;
}

/** The cache key of a cacheable search request; null: pass it to the origin as it is. */
export async function cachePlan(request: Request, env: Env): Promise<Plan | null> {
  if (request.method !== "GET") return null;
  const url = new URL(request.url);
  if (url.pathname !== SEARCH_PATH) return null;
  const names = [...url.searchParams.keys()];
  // The origin reads the last of repeated parameters, URLSearchParams the first: a
  // repeated one could key one search's answer under another's query. Never cached.
  if (names.some((name) => name !== "q" && name !== "limit") || new Set(names).size !== names.length) {
    return null;
  }
  const authorization = request.headers.get("Authorization");
  const config = authorization === null ? null : configFor(env);
  if (config === null) return null;
  const claims = await verifyBearer(authorization, config);
  if (claims === null) return null;

  const q = url.searchParams.get("q") ?? "";
  if (Array.from(q).length > MAX_Q_CHARS) return null;
  const query = searchQuery(q, positiveInt(env.FEEDBACK_MAX_QUERY_CHARS, 200));
  if (query === null) return null;
  const rawLimit = url.searchParams.get("limit");
  if (rawLimit !== null && !LIMIT.test(rawLimit)) return null;
  const limit = rawLimit === null ? positiveInt(env.SEARCH_DEFAULT_LIMIT, 20) : Number(rawLimit);

  const rawGeneration = await env.SEARCH_CACHE.get(generationKey(claims.yachtId));
  if (rawGeneration !== null && !GENERATION.test(rawGeneration.trim())) return null;
  const generation = rawGeneration === null ? 0 : Number(rawGeneration.trim());

  const sse = (request.headers.get("Accept") ?? "").includes(SSE);
  const digest = await sha256Hex(query);
  const key = `cf:${claims.yachtId}:${claims.role}:${generation}:${digest}:${limit}${sse ? ":sse" : ""}`;
  if (new TextEncoder().encode(key).length > MAX_KEY_BYTES) return null;
  return { key, query, contentType: sse ? SSE : JSON_TYPE };
}

export function generationKey(yachtId: string): string {
  return `gen:${yachtId}`;
}

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

function mediaType(headers: Headers): string {
  return (headers.get("Content-Type") ?? "").split(";")[0]!.trim().toLowerCase();
}

function storable(response: Response, plan: Plan): boolean {
  if (response.status !== 200 || response.headers.has("Set-Cookie")) return false;
  if (mediaType(response.headers) !== plan.contentType) return false;
  if (/\bno-store\b/i.test(response.headers.get("Cache-Control") ?? "")) return false;
  const length = response.headers.get("Content-Length");
  return length === null || Number(length) <= MAX_CACHED_BODY_BYTES;
}

/** The body, or null as soon as it is larger than `cap` (the rest is not read). */
async function readCapped(body: ReadableStream<Uint8Array>, cap: number): Promise<Uint8Array | null> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > cap) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/**
 * The `query` the origin says it searched: JSON's `query`, or the `done` event's. Storing
 * only when it is the edge's own normalised query means a disagreement between the two
 * normalisations (a Unicode version apart) is a miss, never another query's answer.
 */
export function answeredQuery(body: string, contentType: string): string | null {
  try {
    if (contentType === JSON_TYPE) {
      const query: unknown = JSON.parse(body)?.query;
      return typeof query === "string" ? query : null;
    }
    for (const event of body.split(/\r?\n\r?\n/)) {
      const lines = event.split(/\r?\n/);
      if (!lines.includes("event: done")) continue;
      const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart());
      const query: unknown = JSON.parse(data.join("\n"))?.query;
      return typeof query === "string" ? query : null;
    }
  } catch {
    // Not the origin's shape: not stored.
  }
  return null;
}

async function store(env: Env, plan: Plan, body: ReadableStream<Uint8Array>, origin: Headers): Promise<void> {
  try {
    const bytes = await readCapped(body, MAX_CACHED_BODY_BYTES);
    if (bytes === null) return;
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
    if (answeredQuery(text, plan.contentType) !== plan.query) return;
    const stored: Stored = { headers: [...origin].filter(([name]) => !NOT_STORED.has(name.toLowerCase())) };
    if (new TextEncoder().encode(JSON.stringify(stored)).length > MAX_METADATA_BYTES) return;
    await env.SEARCH_CACHE.put(plan.key, bytes, { expirationTtl: CACHE_TTL_SECONDS, metadata: stored });
  } catch (error) {
    // A failed write costs the next request a miss, never this one its answer.
    console.warn(`search edge cache: not stored (${String(error)})`);
  }
}
