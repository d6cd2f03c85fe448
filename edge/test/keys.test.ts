// RS256 / ES256 through the issuer's JWK set, and the other settings shared with the origin.
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from "jose";
import { beforeEach, describe, expect, it } from "vitest";
import { resetKeySets } from "../src/auth";
import type { Env } from "../src/env";
import {
  bearer, call, claims, fakeJwks, fakeOrigin, JWKS_URL, testEnv, token, type FakeJwks,
  type FakeOrigin,
} from "./support";

let origin: FakeOrigin;
let issuer: FakeJwks;

function search(): FakeOrigin["reply"] {
  return (request) => {
    const q = new URL(request.path, "https://origin").searchParams.get("q") ?? "";
    return { body: JSON.stringify({ search_id: crypto.randomUUID(), query: q, results: [], cached: false }),
             headers: { "content-type": "application/json" } };
  };
}

beforeEach(() => {
  origin = fakeOrigin();
  origin.reply = search();
  issuer = fakeJwks();
  resetKeySets();
});

async function signed(alg: "RS256" | "ES256", key: CryptoKey, kid: string,
                      payload: JWTPayload = claims()): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, kid }).setIssuedAt().setExpirationTime("5m").sign(key);
}

for (const alg of ["RS256", "ES256"] as const) {
  describe(`${alg} through JWT_JWKS_URL`, () => {
    const bindings: Env = { ...testEnv, JWT_ALGORITHM: alg, JWT_SECRET: undefined, JWT_JWKS_URL: JWKS_URL };

    async function issuerKey(kid: string): Promise<CryptoKey> {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
      issuer.keys.push({ ...(await exportJWK(publicKey)), kid, alg, use: "sig" });
      return privateKey;
    }

    it("verifies, caches, and fetches the key set once per isolate", async () => {
      const key = await issuerKey("k1");
      const auth = bearer(await signed(alg, key, "k1"));
      expect((await call("/api/f1/search?q=pump", auth, bindings)).headers.get("X-Cache")).toBe("MISS");
      expect((await call("/api/f1/search?q=pump", auth, bindings)).headers.get("X-Cache")).toBe("HIT");
      const other = bearer(await signed(alg, key, "k1", claims({ role: "captain" })));
      expect((await call("/api/f1/search?q=pump", other, bindings)).headers.get("X-Cache")).toBe("MISS");
      expect(issuer.fetches).toBe(1);
      expect(origin.requests).toHaveLength(2);
    });

    it("passes through a token signed by a key the issuer never published", async () => {
      const key = await issuerKey("k1");
      await call("/api/f1/search?q=pump", bearer(await signed(alg, key, "k1")), bindings);
      const { privateKey: forger } = await generateKeyPair(alg);
      for (const kid of ["k1", "k2"]) {
        const answer = await call("/api/f1/search?q=pump", bearer(await signed(alg, forger, kid)), bindings);
        expect(answer.headers.get("X-Cache")).toBeNull();
      }
      expect(origin.requests).toHaveLength(3);
    });

    it("passes through an HS256 token keyed with the issuer's public key", async () => {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
      issuer.keys.push({ ...(await exportJWK(publicKey)), kid: "k1", alg, use: "sig" });
      await call("/api/f1/search?q=pump", bearer(await signed(alg, privateKey, "k1")), bindings);
      const pem = await exportSPKI(publicKey);
      const confused = await new SignJWT(claims()).setProtectedHeader({ alg: "HS256", kid: "k1" })
        .setExpirationTime("5m").sign(new TextEncoder().encode(pem));
      const answer = await call("/api/f1/search?q=pump", bearer(confused), bindings);
      expect(answer.headers.get("X-Cache")).toBeNull();
      expect(origin.requests).toHaveLength(2);
    });

    it("passes everything through while the issuer's key set cannot be fetched", async () => {
      const key = await issuerKey("k1");
      issuer.status = 503;
      const auth = bearer(await signed(alg, key, "k1"));
      for (let i = 0; i < 2; i++) {
        const answer = await call("/api/f1/search?q=pump", auth, bindings);
        expect(answer.status).toBe(200); // the origin's answer, not an error of the edge
        expect(answer.headers.get("X-Cache")).toBeNull();
      }
      expect(origin.requests).toHaveLength(2);
    });

    it("passes through a token without a kid", async () => {
      const key = await issuerKey("k1");
      const noKid = await new SignJWT(claims()).setProtectedHeader({ alg }).setExpirationTime("5m").sign(key);
      for (let i = 0; i < 2; i++) {
        expect((await call("/api/f1/search?q=pump", bearer(noKid), bindings)).headers.get("X-Cache")).toBeNull();
      }
    });
  });
}

describe("the settings shared with the origin", () => {
  it("checks aud and iss when they are configured", async () => {
    const bindings: Env = { ...testEnv, JWT_AUDIENCE: "f1-search", JWT_ISSUER: "https://issuer.example" };
    const plain = bearer(await token());
    for (let i = 0; i < 2; i++) {
      expect((await call("/api/f1/search?q=pump", plain, bindings)).headers.get("X-Cache")).toBeNull();
    }
    const scoped = bearer(await token(claims({ aud: "f1-search", iss: "https://issuer.example" })));
    expect((await call("/api/f1/search?q=pump", scoped, bindings)).headers.get("X-Cache")).toBe("MISS");
    expect((await call("/api/f1/search?q=pump", scoped, bindings)).headers.get("X-Cache")).toBe("HIT");
  });

  it("tolerates clock skew within JWT_LEEWAY_SECONDS only", async () => {
    const now = Math.floor(Date.now() / 1000);
    const justExpired = bearer(await token(claims({ iat: now - 600 }), undefined, now - 10));
    expect((await call("/api/f1/search?q=pump", justExpired)).headers.get("X-Cache")).toBe("MISS");
    const strict: Env = { ...testEnv, JWT_LEEWAY_SECONDS: "0" };
    expect((await call("/api/f1/search?q=pump", justExpired, strict)).headers.get("X-Cache")).toBeNull();
  });

  for (const [name, bad] of [
    ["a short JWT_SECRET", { JWT_SECRET: "too-short" }],
    ["an unknown JWT_ALGORITHM", { JWT_ALGORITHM: "none" }],
    ["HS256 with a JWT_JWKS_URL", { JWT_JWKS_URL: JWKS_URL }],
    ["ES256 without a JWT_JWKS_URL", { JWT_ALGORITHM: "ES256", JWT_SECRET: undefined }],
  ] as const) {
    it(`with ${name} caches nothing and passes everything through`, async () => {
      const bindings: Env = { ...testEnv, ...bad };
      const auth = bearer(await token());
      for (let i = 0; i < 2; i++) {
        const answer = await call("/api/f1/search?q=pump", auth, bindings);
        expect(answer.status).toBe(200);
        expect(answer.headers.get("X-Cache")).toBeNull();
      }
      expect(origin.requests).toHaveLength(2);
    });
  }
});
