"""The search front door: `f1backfill serve`, an HTTP API in front of search_index.

- `GET /api/f1/search` ranks the rows of the token's yacht by cosine distance to the
  query's embedding (JSON, or server-sent events), through a Redis cache whose keys carry
  the yacht's generation, which every re-embed bumps (`f1backfill.generations`);
- `POST /api/analytics/search-click` records a click for the feedback loop;
- `POST /api/f1/session` pre-warms the cache for the token's yacht and role at login;
- `GET /health`, `GET /metrics`.

Every endpoint but the last two verifies the bearer token first (`auth.py`) and takes the
yacht, user, organisation and role from its claims, never from the request.
"""
