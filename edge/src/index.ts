// The Worker's entry point: only the handler is exported (a module's other exports would
// be taken for entry points). What it does: cache.ts.
import { handle } from "./cache";
import type { Env } from "./env";

export type { Env } from "./env";

export default { fetch: handle } satisfies ExportedHandler<Env>;
