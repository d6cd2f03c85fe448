// The shared test vectors (tests/vectors/search_keys.json, generated from the origin's
// Python by scripts/sync_edge.py): the Worker must derive the same key material.
import { describe, expect, it } from "vitest";
import { generationKey, sha256Hex } from "../src/cache";
import { searchQuery } from "../src/querytext";
import vectors from "../../tests/vectors/search_keys.json";

describe("query normalisation matches the origin's", () => {
  it.each(vectors.queries.map((v) => [v.why, v] as const))("%s", async (_why, vector) => {
    const normalized = searchQuery(vector.raw, vectors.max_query_chars);
    expect(normalized).toBe(vector.normalized);
    if (normalized !== null) expect(await sha256Hex(normalized)).toBe(vector.sha256);
  });

  it.each(vectors.keys.map((v) => [v.edge_key, v] as const))("key %s", async (_key, vector) => {
    const normalized = searchQuery(vector.q, vectors.max_query_chars)!;
    const key = `cf:${vector.yacht_id}:${vector.role}:${vector.generation}:${await sha256Hex(normalized)}:${vector.limit}`;
    expect(key).toBe(vector.edge_key);
    expect(vector.origin_key.replace(/^f1:search:/, "cf:")).toBe(key);
  });

  it("names the generation key as the origin side publishes it", () => {
    expect(generationKey(vectors.keys[0]!.yacht_id)).toBe(`gen:${vectors.keys[0]!.yacht_id}`);
  });
});
