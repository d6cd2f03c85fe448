import { defineWorkersConfig } from "@cloudflare/vitest-pool-workers/config";

// The tests run inside workerd, the Workers runtime, with the bindings of wrangler.toml
// (KV emulated locally and emptied between tests) and these test values on top.
export default defineWorkersConfig({
  test: {
    poolOptions: {
      workers: {
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            JWT_SECRET: "test-secret-that-is-at-least-32-bytes-long",
          },
        },
      },
    },
  },
});
