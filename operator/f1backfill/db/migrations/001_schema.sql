-- 001: the schema: yachts, search_index, the queue, dead letters, clicks, the feedback log.
-- {dimensions} is the only composed value (a literal integer from the migrate command);
-- everything else is static.

CREATE EXTENSION IF NOT EXISTS vector;

-- Yachts of the fleet. `plan` turns the active ones into YachtBackfill CRs
-- (they replace the backfill_schedule table of the manual procedure).
CREATE TABLE IF NOT EXISTS yachts (
    id          UUID PRIMARY KEY,
    org_id      UUID,
    name        TEXT NOT NULL,
    tier        TEXT NOT NULL DEFAULT 'standard'
                CHECK (tier IN ('enterprise', 'premium', 'standard')),
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per searchable entity. embedding_status:
--   pending    needs an embedding, not queued yet (NULL is read as pending too)
--   queued     has a queued embedding_jobs row
--   processing claimed by a worker
--   embedded   embedding is current
--   failed     transient: the DLQ trigger turns it into dlq (see below)
--   dlq        in embedding_dlq, waiting for a person or a replay
CREATE TABLE IF NOT EXISTS search_index (
    object_type          TEXT NOT NULL,
    object_id            UUID NOT NULL,
    yacht_id             UUID NOT NULL,
    org_id               UUID,
    search_text          TEXT NOT NULL DEFAULT '',
    embedding            vector({dimensions}),
    embedding_status     TEXT DEFAULT 'pending'
                         CHECK (embedding_status IN
                                ('pending', 'queued', 'processing', 'embedded', 'failed', 'dlq')),
    embedding_attempts   INTEGER NOT NULL DEFAULT 0,
    embedding_queued_at  TIMESTAMPTZ,
    embedding_model      TEXT,
    embedded_at          TIMESTAMPTZ,
    content_hash         TEXT,
    payload              JSONB NOT NULL DEFAULT '{}'::jsonb,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (object_type, object_id)
);

-- Progress counts per yacht and the enqueue scan both read (yacht, status).
CREATE INDEX IF NOT EXISTS search_index_yacht_status
    ON search_index (yacht_id, embedding_status);

-- The work queue. A row per embedding request; done rows stay as history.
CREATE TABLE IF NOT EXISTS embedding_jobs (
    id                BIGSERIAL PRIMARY KEY,
    object_type       TEXT NOT NULL,
    object_id         UUID NOT NULL,
    yacht_id          UUID NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'processing', 'done', 'dlq', 'skipped',
                                        'superseded')),
    queued_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    claimed_by        TEXT,
    lease_expires_at  TIMESTAMPTZ,
    last_error_code   TEXT,
    last_error        TEXT,
    FOREIGN KEY (object_type, object_id)
        REFERENCES search_index (object_type, object_id) ON DELETE CASCADE
);

-- At most one waiting job per object: enqueue is idempotent (ON CONFLICT DO NOTHING).
-- A processing job may coexist with one queued job when the text changed meanwhile.
CREATE UNIQUE INDEX IF NOT EXISTS embedding_jobs_one_queued
    ON embedding_jobs (object_type, object_id) WHERE status = 'queued';

-- The claim: yacht + status, in priority then queue order. Partial, so its size is the
-- number of queued rows, and a claim reads O(batch) entries however much history piles up.
CREATE INDEX IF NOT EXISTS embedding_jobs_claim
    ON embedding_jobs (yacht_id, priority DESC, queued_at, id) WHERE status = 'queued';

-- Lease expiry and heartbeats look at processing rows only.
CREATE INDEX IF NOT EXISTS embedding_jobs_processing
    ON embedding_jobs (yacht_id, lease_expires_at) WHERE status = 'processing';

CREATE TABLE IF NOT EXISTS embedding_dlq (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    object_type         TEXT NOT NULL,
    object_id           UUID NOT NULL,
    yacht_id            UUID,
    error_message       TEXT,
    error_code          TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    first_failure_at    TIMESTAMPTZ,
    last_failure_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    search_text_sample  TEXT,
    content_hash        TEXT,
    resolved_at         TIMESTAMPTZ,
    resolution_type     TEXT CHECK (resolution_type IN ('retry_success', 'manual_fix', 'abandoned')),
    CONSTRAINT dlq_unique_object UNIQUE (object_type, object_id)
);

CREATE INDEX IF NOT EXISTS embedding_dlq_unresolved
    ON embedding_dlq (yacht_id) WHERE resolved_at IS NULL;

-- The dead-letter trigger reads NEW only: re-reading the row being updated from the table
-- would see the old attempt count (a row dead-lettered one failure late). It counts no
-- attempts itself, so no limit is hard-coded here: the worker marks a row 'failed' only
-- when it is out of attempts or can never succeed; the reason travels in NEW.payload
-- (last_error, last_error_code, first_failure_at), and the trigger files it and turns the
-- row into 'dlq'.
CREATE OR REPLACE FUNCTION move_to_dlq() RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO embedding_dlq AS d (
        object_type, object_id, yacht_id, error_message, error_code, attempts,
        first_failure_at, last_failure_at, search_text_sample, content_hash
    ) VALUES (
        NEW.object_type, NEW.object_id, NEW.yacht_id,
        NEW.payload->>'last_error', COALESCE(NEW.payload->>'last_error_code', 'unknown'),
        NEW.embedding_attempts,
        COALESCE((NEW.payload->>'first_failure_at')::timestamptz, now()), now(),
        LEFT(NEW.search_text, 500), NEW.content_hash
    )
    ON CONFLICT (object_type, object_id) DO UPDATE SET
        yacht_id = EXCLUDED.yacht_id,
        error_message = EXCLUDED.error_message,
        error_code = EXCLUDED.error_code,
        attempts = EXCLUDED.attempts,
        last_failure_at = EXCLUDED.last_failure_at,
        search_text_sample = EXCLUDED.search_text_sample,
        content_hash = EXCLUDED.content_hash,
        resolved_at = NULL,
        resolution_type = NULL;
    NEW.embedding_status := 'dlq';
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS trg_move_to_dlq ON search_index;
CREATE TRIGGER trg_move_to_dlq
    BEFORE INSERT OR UPDATE OF embedding_status ON search_index
    FOR EACH ROW
    WHEN (NEW.embedding_status = 'failed')
    EXECUTE FUNCTION move_to_dlq();

-- Clicks, recorded by the search front end (or `f1backfill feedback record`).
CREATE TABLE IF NOT EXISTS search_click_events (
    id                   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id               UUID NOT NULL,
    yacht_id             UUID NOT NULL,
    user_id              UUID NOT NULL,
    search_id            UUID,
    query_text           TEXT NOT NULL,
    query_normalized     TEXT NOT NULL,
    clicked_object_type  TEXT NOT NULL,
    clicked_object_id    UUID NOT NULL,
    click_position       INTEGER,
    search_timestamp     TIMESTAMPTZ,
    click_timestamp      TIMESTAMPTZ DEFAULT now(),
    dwell_time_ms        INTEGER,
    was_successful       BOOLEAN,
    CONSTRAINT fk_clicked_object
        FOREIGN KEY (clicked_object_type, clicked_object_id)
        REFERENCES search_index (object_type, object_id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_click_events_target
    ON search_click_events (clicked_object_type, clicked_object_id);
CREATE INDEX IF NOT EXISTS idx_click_events_query
    ON search_click_events (query_normalized);
CREATE INDEX IF NOT EXISTS idx_click_events_yacht_time
    ON search_click_events (yacht_id, click_timestamp);

CREATE TABLE IF NOT EXISTS feedback_learning_log (
    id               BIGSERIAL PRIMARY KEY,
    run_date         TIMESTAMPTZ NOT NULL DEFAULT now(),
    yacht_id         UUID,
    terms_added      INTEGER NOT NULL DEFAULT 0,
    objects_updated  INTEGER NOT NULL DEFAULT 0,
    details          JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- The default drift source (work orders). Real deployments already have it;
-- created here so drift checks and the demo work on a fresh database.
CREATE TABLE IF NOT EXISTS pms_work_orders (
    id          UUID PRIMARY KEY,
    yacht_id    UUID NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
