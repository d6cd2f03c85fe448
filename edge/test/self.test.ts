// The Worker as deployed: wrangler.toml's main module and bindings, through workerd's own
// dispatch (SELF), not a direct call of the handler.
import { SELF } from "cloudflare:test";
import { expect, it } from "vitest";
import { fakeOrigin, ORIGIN, token } from "./support";

it("serves a miss, then a hit, through the deployed entry point", async () => {
  const origin = fakeOrigin();
  origin.reply = () => ({ body: '{"search_id":"s1","query":"pump","results":[],"cached":false}',
                          headers: { "content-type": "application/json" } });
  const init = { headers: { Authorization: `Bearer ${await token()}` } };
  const first = await SELF.fetch(`${ORIGIN}/api/f1/search?q=pump`, init);
  expect(first.headers.get("X-Cache")).toBe("MISS");
  expect(await first.json()).toMatchObject({ query: "pump" });
  // The write happens after the response (waitUntil): poll for it.
  let cache: string | null = null;
  for (let i = 0; i < 50 && cache !== "HIT"; i++) {
    const again = await SELF.fetch(`${ORIGIN}/api/f1/search?q=pump`, init);
    cache = again.headers.get("X-Cache");
    await again.arrayBuffer();
    if (cache !== "HIT") await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(cache).toBe("HIT");
  const other = await SELF.fetch(`${ORIGIN}/health`);
  expect(other.headers.get("X-Cache")).toBeNull();
  await other.arrayBuffer();
});
