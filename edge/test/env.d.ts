import type { Env } from "../src/env";

declare module "cloudflare:test" {
  // The bindings of wrangler.toml and vitest.config.ts, as the Worker sees them.
  interface ProvidedEnv extends Env {}
}
