/**
 * Bearer tokens, verified before any claim is read: the origin's rules (f1backfill serve,
 * operator/f1backfill/frontdoor/auth.py), so that the edge never accepts a token the origin
 * would refuse.
 *
 * 1. `Authorization: Bearer <compact JWS>` (scheme case-insensitive, bounded length);
 * 2. the token's `alg` is the configured JWT_ALGORITHM, never the header's choice: `none`,
 *    an HS256 token "signed" with a public key, or any other algorithm is refused;
 * 3. the signature, with JWT_SECRET (HS256) or the key of the token's `kid` in the JWK set
 *    at JWT_JWKS_URL (RS256 / ES256), the set cached in this isolate for JWT_JWKS_TTL_SECONDS;
 *    `jku`, `x5u` and `jwk` headers are ignored;
 * 4. `exp` (required), `nbf` and `iat` with JWT_LEEWAY_SECONDS of skew; `aud` / `iss`
 *    when JWT_AUDIENCE / JWT_ISSUER are set;
 * 5. the claims `yacht_id`, `user_id`, `org_id` (UUIDs, lowercased) and `role` (non-empty).
 *
 * Any failure is `null`: the request then goes to the origin as it came, which answers 401.
 */
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyOptions } from "jose";
import type { Env } from "./env";

export interface Claims {
  yachtId: string;
  userId: string;
  orgId: string;
  role: string;
}

export type Algorithm = "HS256" | "RS256" | "ES256";
const ALGORITHMS: readonly string[] = ["HS256", "RS256", "ES256"];

// RFC 7518 §3.2: an HS256 key at least as long as the hash output; the origin's minimum.
const MIN_SECRET_BYTES = 32;
// Far above any real token, far below what it would cost to parse (the origin's bound).
const MAX_AUTHORIZATION_CHARS = 8192;
// Fetching the JWK set: a request waits for it, so short; a flood of unknown kids costs
// the issuer at most one fetch per cooldown (the origin's 10 s).
const JWKS_TIMEOUT_MS = 3000;
const JWKS_COOLDOWN_MS = 10_000;
const DEFAULT_LEEWAY_SECONDS = 30;
const DEFAULT_JWKS_TTL_SECONDS = 300;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Stricter than the origin's str.split() (which also splits on U+0085 and U+00A0): a
// header refused here only goes to the origin, which decides.
const SPACES = /[ \t\r\n\v\f]+/;

/** How tokens are verified; a configuration that cannot verify anything is an error. */
export interface AuthConfig {
  algorithm: Algorithm;
  secret?: Uint8Array;
  jwksUrl?: URL;
  jwksTtlSeconds: number;
  leewaySeconds: number;
  audience?: string;
  issuer?: string;
}

export class ConfigError extends Error {}

function seconds(env: Env, name: keyof Env, fallback: number, lo: number, hi: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < lo || value > hi) {
    throw new ConfigError(`${name}=${String(raw)} is out of range [${lo}, ${hi}]`);
  }
  return value;
}

/** The configuration from the Worker's bindings; ConfigError names the bad variable. */
export function authConfig(env: Env): AuthConfig {
  const algorithm = env.JWT_ALGORITHM || "HS256";
  if (!ALGORITHMS.includes(algorithm)) {
    throw new ConfigError(`JWT_ALGORITHM must be one of ${ALGORITHMS.join(", ")}, got ${algorithm}`);
  }
  const config: AuthConfig = {
    algorithm: algorithm as Algorithm,
    leewaySeconds: seconds(env, "JWT_LEEWAY_SECONDS", DEFAULT_LEEWAY_SECONDS, 0, 300),
    jwksTtlSeconds: seconds(env, "JWT_JWKS_TTL_SECONDS", DEFAULT_JWKS_TTL_SECONDS, 10, 86400),
    audience: env.JWT_AUDIENCE || undefined,
    issuer: env.JWT_ISSUER || undefined,
  };
  if (algorithm === "HS256") {
    if (env.JWT_JWKS_URL) throw new ConfigError("JWT_JWKS_URL is set but JWT_ALGORITHM=HS256");
    const secret = new TextEncoder().encode(env.JWT_SECRET ?? "");
    if (secret.length < MIN_SECRET_BYTES) {
      throw new ConfigError(`JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes with HS256`);
    }
    if ((env.JWT_SECRET ?? "").includes("-----BEGIN")) {
      throw new ConfigError("JWT_SECRET is a key, not a shared secret: use RS256 or ES256");
    }
    config.secret = secret;
  } else {
    if (env.JWT_SECRET) throw new ConfigError(`JWT_SECRET is set but JWT_ALGORITHM=${algorithm}`);
    let url: URL;
    try {
      url = new URL(env.JWT_JWKS_URL ?? "");
    } catch {
      throw new ConfigError(`JWT_JWKS_URL must be an http(s) URL with JWT_ALGORITHM=${algorithm}`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new ConfigError("JWT_JWKS_URL must be an http(s) URL");
    }
    config.jwksUrl = url;
  }
  return config;
}

// The JWK set of this isolate, one per URL and TTL: fetched on first use, kept for the
// TTL, refetched for an unknown kid at most once per cooldown.
const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

function keySet(url: URL, ttlSeconds: number): ReturnType<typeof createRemoteJWKSet> {
  const id = `${ttlSeconds} ${url.href}`;
  let set = keySets.get(id);
  if (set === undefined) {
    set = createRemoteJWKSet(url, {
      cacheMaxAge: ttlSeconds * 1000,
      cooldownDuration: JWKS_COOLDOWN_MS,
      timeoutDuration: JWKS_TIMEOUT_MS,
    });
    keySets.set(id, set);
  }
  return set;
}

/** Forget the cached JWK sets (tests). */
export function resetKeySets(): void {
  keySets.clear();
}

function bearerToken(header: string | null): string | null {
  if (header === null || header.length > MAX_AUTHORIZATION_CHARS) return null;
  const parts = header.trim().split(SPACES);
  if (parts.length !== 2 || parts[0]!.toLowerCase() !== "bearer") return null;
  return COMPACT_JWS.test(parts[1]!) ? parts[1]! : null;
}

function claims(payload: JWTPayload): Claims | null {
  const ids: string[] = [];
  for (const name of ["yacht_id", "user_id", "org_id"]) {
    const value = payload[name];
    if (typeof value !== "string" || !UUID.test(value)) return null;
    ids.push(value.toLowerCase());
  }
  const role = payload["role"];
  if (typeof role !== "string" || role.trim() === "") return null;
  return { yachtId: ids[0]!, userId: ids[1]!, orgId: ids[2]!, role };
}

/** The claims of a valid bearer token; null for anything else (the reason is not told). */
export async function verifyBearer(header: string | null, config: AuthConfig): Promise<Claims | null> {
  const token = bearerToken(header);
  if (token === null) return null;
  const options: JWTVerifyOptions = {
    algorithms: [config.algorithm],
    clockTolerance: config.leewaySeconds,
    requiredClaims: ["exp"],
    audience: config.audience,
    issuer: config.issuer,
  };
  try {
    const { payload, protectedHeader } = config.secret
      ? await jwtVerify(token, config.secret, options)
      : await jwtVerify(token, keySet(config.jwksUrl!, config.jwksTtlSeconds), options);
    // The origin looks keys up by kid only; a token without one is refused there too.
    if (config.jwksUrl && typeof protectedHeader.kid !== "string") return null;
    // PyJWT refuses a token issued in the future (beyond the leeway); jose does not.
    if (typeof payload.iat === "number" && payload.iat > Date.now() / 1000 + config.leewaySeconds) {
      return null;
    }
    return claims(payload);
  } catch (error) {
    if (!(error instanceof errors.JOSEError)) {
      // Not a refusal jose knows: still fail closed, but let it be seen.
      console.warn("bearer token refused: unexpected error verifying it", error);
    }
    return null;
  }
}
