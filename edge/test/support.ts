// What the tests share: signed tokens, a fake origin behind fetchMock, and one request
// through the Worker that waits for its deferred KV write.
import { createExecutionContext, env, fetchMock, waitOnExecutionContext } from "cloudflare:test";
import { SignJWT, type JWTPayload } from "jose";
import worker, { type Env } from "../src/index";

export const ORIGIN = "https://search.example.com";
export const YACHT = "3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b";
export const OTHER_YACHT = "0b6f5d1c-2a3b-4c5d-8e9f-0a1b2c3d4e5f";
export const USER = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
export const ORG = "11111111-2222-4333-8444-555555555555";

export const testEnv = env as unknown as Env;

export function claims(extra: JWTPayload = {}): JWTPayload {
  return { yacht_id: YACHT, user_id: USER, org_id: ORG, role: "engineer", ...extra };
}

/** An HS256 token signed with `secret` (default: the Worker's), valid for five minutes,
 * issued now unless `payload` says when. */
export async function token(payload: JWTPayload = claims(), secret = testEnv.JWT_SECRET!,
                            expiresIn: string | number = "5m"): Promise<string> {
  const jwt = new SignJWT(payload).setProtectedHeader({ alg: "HS256", typ: "JWT" });
  if (payload.iat === undefined) jwt.setIssuedAt();
  return jwt.setExpirationTime(expiresIn).sign(new TextEncoder().encode(secret));
}

export function b64url(value: unknown): string {
  return btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export interface OriginRequest {
  path: string;
  headers: Record<string, string>;
}

export interface OriginReply {
  status?: number;
  body: string;
  headers?: Record<string, string>;
}

/** The origin: records what reaches it and answers with `reply` (changeable per test). */
export class FakeOrigin {
  requests: OriginRequest[] = [];
  reply: (request: OriginRequest) => OriginReply = () => ({ status: 404, body: "not found" });

  reset(): this {
    this.requests = [];
    this.reply = () => ({ status: 404, body: "not found" });
    return this;
  }
}

let installed: FakeOrigin | null = null;

/** The one fake origin of this test file, reset: fetchMock's interceptors outlive a test. */
export function fakeOrigin(): FakeOrigin {
  if (installed === null) {
    const origin = new FakeOrigin();
    fetchMock.activate();
    fetchMock.disableNetConnect();
    fetchMock
      .get(ORIGIN)
      .intercept({ path: () => true, method: () => true })
      .reply((opts) => {
        const headers: Record<string, string> = {};
        new Headers(opts.headers as HeadersInit).forEach((value, name) => (headers[name] = value));
        const request = { path: opts.path, headers };
        origin.requests.push(request);
        const answer = origin.reply(request);
        return { statusCode: answer.status ?? 200, data: answer.body, responseOptions: { headers: answer.headers ?? {} } };
      })
      .persist();
    installed = origin;
  }
  return installed.reset();
}

export interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

/** One request through the Worker, its deferred work (the KV write) awaited. */
export async function call(path: string, init: RequestInit = {}, bindings: Env = testEnv): Promise<Answer> {
  const request = new Request(`${ORIGIN}${path}`, init) as Request<unknown, IncomingRequestCfProperties>;
  const ctx = createExecutionContext();
  const response = await worker.fetch(request, bindings, ctx);
  const body = await response.text();
  await waitOnExecutionContext(ctx);
  return { status: response.status, headers: response.headers, body };
}

export function bearer(jwt: string): RequestInit {
  return { headers: { Authorization: `Bearer ${jwt}` } };
}

export const JWKS_URL = "https://issuer.example/.well-known/jwks.json";

/** The issuer's JWK set endpoint: serves `keys`, counts its fetches. */
export class FakeJwks {
  keys: object[] = [];
  status = 200;
  fetches = 0;
}

let jwks: FakeJwks | null = null;

export function fakeJwks(): FakeJwks {
  if (jwks === null) {
    const served = new FakeJwks();
    fetchMock
      .get("https://issuer.example")
      .intercept({ path: "/.well-known/jwks.json" })
      .reply(() => {
        served.fetches++;
        return { statusCode: served.status, data: JSON.stringify({ keys: served.keys }), responseOptions: { headers: { "content-type": "application/json" } } };
      })
      .persist();
    jwks = served;
  }
  jwks.keys = [];
  jwks.status = 200;
  jwks.fetches = 0;
  return jwks;
}
