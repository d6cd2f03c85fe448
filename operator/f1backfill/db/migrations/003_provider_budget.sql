-- 003: one token bucket per provider account (API key + model), shared by every worker
-- that spends it (docs/design.md, "The account's budget").
--
-- `account` is a SHA-256 of the key and the model: the key itself is never stored.
-- `requests` and `tokens` are the bucket's levels at `updated_at` (the database's clock):
-- a reader refills them by the time elapsed, capped at one minute's budget. A level below
-- zero is budget already promised to requests waiting their turn. A new row starts empty:
-- nothing is known of the account, and the last user may have just spent it.
-- `*_adjusted` sum every settlement and correction ever applied: a correction computed
-- against a reservation's level subtracts those applied since, so two responses that bring
-- the same news do not apply it twice.
CREATE TABLE IF NOT EXISTS provider_budget (
    account              TEXT PRIMARY KEY,
    requests_per_minute  DOUBLE PRECISION NOT NULL CHECK (requests_per_minute > 0),
    tokens_per_minute    DOUBLE PRECISION NOT NULL CHECK (tokens_per_minute > 0),
    requests             DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens               DOUBLE PRECISION NOT NULL DEFAULT 0,
    requests_adjusted    DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens_adjusted      DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
) WITH (fillfactor = 50);
-- fillfactor: every request updates its account's row; room on the page keeps those
-- updates HOT (no index entry per version).
