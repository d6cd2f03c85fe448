-- Named queries, split on "-- name: <name>" lines by f1backfill.db.queries().
-- Values are always parameters. The only identifiers that vary (drift_stale and
-- drift_requeue: a source table and its columns) are composed with psycopg2.sql.Identifier.

-- name: migration_lock
-- Serialises concurrent migration runs (db/migrate.py); the second waits, then finds
-- nothing to do. A session lock: it outlives the per-migration transactions.
SELECT pg_advisory_lock(%(lock_id)s);

-- name: migration_unlock
SELECT pg_advisory_unlock(%(lock_id)s);

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM schema_migrations;

-- name: migration_record
-- In the migration's own transaction: a migration is recorded if and only if it applied.
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: enqueue_pending
-- Queue a yacht's rows that need an embedding. Idempotent: a queued row is no longer
-- pending, and the partial unique index refuses a second queued job for an object.
WITH pending AS (
    SELECT object_type, object_id
    FROM search_index
    WHERE yacht_id = %(yacht_id)s
      AND (embedding_status = 'pending' OR embedding_status IS NULL)
      AND NOT (object_type = ANY (%(skip_types)s::text[]))
    ORDER BY object_type, object_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE search_index si
    SET embedding_status = 'queued', embedding_queued_at = now()
    FROM pending p
    WHERE si.object_type = p.object_type AND si.object_id = p.object_id
    RETURNING si.object_type, si.object_id, si.yacht_id
)
INSERT INTO embedding_jobs (object_type, object_id, yacht_id, priority)
SELECT object_type, object_id, yacht_id, %(priority)s FROM marked
ON CONFLICT (object_type, object_id) WHERE status = 'queued' DO NOTHING;

-- name: skip_types
-- SKIP_OBJECT_TYPES: queued jobs of those types are set aside and their rows left pending,
-- so a later run without the skip picks them up again.
WITH skipped AS (
    UPDATE embedding_jobs
    SET status = 'skipped', finished_at = now()
    WHERE yacht_id = %(yacht_id)s AND status = 'queued'
      AND object_type = ANY (%(skip_types)s::text[])
    RETURNING object_type, object_id
)
UPDATE search_index si
SET embedding_status = 'pending'
FROM skipped s
WHERE si.object_type = s.object_type AND si.object_id = s.object_id
  AND si.embedding_status = 'queued'
RETURNING si.object_type;

-- name: reclaim_expired
-- Jobs whose worker stopped renewing its lease (killed, OOM, partitioned) go back to the
-- queue. The lost attempt counts, so a row that kills every worker ends in the DLQ.
WITH expired AS (
    SELECT id, object_type, object_id
    FROM embedding_jobs
    WHERE yacht_id = %(yacht_id)s AND status = 'processing' AND lease_expires_at < now()
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE embedding_jobs j
    SET status = CASE WHEN EXISTS (
                     SELECT 1 FROM embedding_jobs q
                     WHERE q.object_type = j.object_type AND q.object_id = j.object_id
                       AND q.status = 'queued')
                 THEN 'superseded' ELSE 'queued' END,
        claimed_by = NULL, lease_expires_at = NULL, available_at = now(),
        last_error_code = 'lease_expired', last_error = 'worker lease expired'
    FROM expired e
    WHERE j.id = e.id
    RETURNING j.object_type, j.object_id, j.status
)
UPDATE search_index si
SET embedding_status = 'queued',
    embedding_attempts = si.embedding_attempts + 1,
    payload = si.payload || jsonb_build_object(
        'last_error', 'worker lease expired', 'last_error_code', 'lease_expired',
        'first_failure_at', COALESCE(si.payload->>'first_failure_at', now()::text))
FROM requeued r
WHERE si.object_type = r.object_type AND si.object_id = r.object_id
  AND si.embedding_status = 'processing'
RETURNING si.object_type, si.object_id;

-- name: claim_batch
-- Claim up to %(limit)s of the yacht's queued jobs, priority first, then queue order.
-- SKIP LOCKED lets concurrent workers take disjoint batches without waiting.
WITH picked AS (
    SELECT id
    FROM embedding_jobs
    WHERE yacht_id = %(yacht_id)s AND status = 'queued' AND available_at <= now()
    ORDER BY priority DESC, queued_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE embedding_jobs j
    SET status = 'processing', claimed_by = %(worker)s, started_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM picked p
    WHERE j.id = p.id
    RETURNING j.id, j.object_type, j.object_id
), marked AS (
    UPDATE search_index si
    SET embedding_status = 'processing'
    FROM claimed c
    WHERE si.object_type = c.object_type AND si.object_id = c.object_id
    RETURNING c.id, si.object_type, si.object_id, si.search_text, si.embedding_attempts,
              md5(si.search_text) AS text_hash
)
SELECT id, object_type, object_id, search_text, embedding_attempts, text_hash
FROM marked
ORDER BY id;

-- name: finish_jobs
-- The jobs of a batch we still own (a lease may have expired and been reclaimed).
-- An earlier error stays on the job as history.
UPDATE embedding_jobs
SET status = %(status)s, finished_at = now(), lease_expires_at = NULL,
    last_error_code = COALESCE(%(error_code)s, last_error_code),
    last_error = COALESCE(%(error)s, last_error)
WHERE id = ANY (%(ids)s) AND status = 'processing' AND claimed_by = %(worker)s
RETURNING id;

-- name: vectors_table
-- A batch's vectors arrive by binary COPY (see worker/queue.py): formatting 150,000 floats
-- as text and parsing them back cost more than the rest of the batch together.
CREATE TEMP TABLE IF NOT EXISTS batch_vectors (
    object_type  TEXT NOT NULL,
    object_id    UUID NOT NULL,
    text_hash    TEXT NOT NULL,
    embedding    vector NOT NULL
) ON COMMIT DELETE ROWS;

-- name: copy_vectors
-- The payload is PostgreSQL's binary COPY format (worker/queue.py copy_vectors_payload).
COPY batch_vectors FROM STDIN WITH (FORMAT binary);

-- name: store_embeddings
-- Vectors for jobs we still own (batch_vectors holds only those), written only where the
-- text is still the text we embedded; release_stale_text handles the others.
UPDATE search_index si
SET embedding = v.embedding,
    embedding_status = 'embedded',
    embedding_model = %(model)s,
    embedding_provider = %(provider)s,
    embedded_at = now(),
    embedding_attempts = 0,
    payload = si.payload - 'last_error' - 'last_error_code' - 'first_failure_at'
FROM batch_vectors v
WHERE si.object_type = v.object_type AND si.object_id = v.object_id
  AND md5(si.search_text) = v.text_hash
RETURNING si.object_type, si.object_id;

-- name: release_stale_text
-- Owned rows whose text changed while we embedded: give them back as pending.
UPDATE search_index si
SET embedding_status = 'pending'
FROM unnest(%(object_types)s::text[], %(object_ids)s::uuid[], %(text_hashes)s::text[])
     AS v (object_type, object_id, text_hash)
WHERE si.object_type = v.object_type AND si.object_id = v.object_id
  AND md5(si.search_text) <> v.text_hash AND si.embedding_status = 'processing';

-- name: resolve_dead_letters
-- A dead letter whose row has now embedded is resolved as a successful retry.
UPDATE embedding_dlq d
SET resolved_at = now(), resolution_type = 'retry_success'
FROM unnest(%(object_types)s::text[], %(object_ids)s::uuid[]) AS v (object_type, object_id)
WHERE d.object_type = v.object_type AND d.object_id = v.object_id
  AND d.resolved_at IS NULL;

-- name: requeue_rows
-- Rows that failed but have attempts left: back to the queue after a backoff.
-- attempts is the row's new attempt count; zero-increment for a release (SIGTERM, 429).
WITH v AS (
    SELECT * FROM unnest(%(job_ids)s::bigint[], %(object_types)s::text[],
                         %(object_ids)s::uuid[], %(attempts)s::int[], %(error_codes)s::text[],
                         %(errors)s::text[], %(delays)s::float8[])
        AS v (job_id, object_type, object_id, attempts, error_code, error, delay)
),
jobs AS (
    -- A newer job already queued for the object (its text changed) supersedes this one.
    UPDATE embedding_jobs j
    SET status = CASE WHEN EXISTS (
                     SELECT 1 FROM embedding_jobs q
                     WHERE q.object_type = j.object_type AND q.object_id = j.object_id
                       AND q.status = 'queued')
                 THEN 'superseded' ELSE 'queued' END,
        claimed_by = NULL, lease_expires_at = NULL,
        available_at = now() + make_interval(secs => v.delay),
        last_error_code = v.error_code, last_error = v.error
    FROM v
    WHERE j.id = v.job_id AND j.status = 'processing' AND j.claimed_by = %(worker)s
    RETURNING j.id
)
UPDATE search_index si
SET embedding_status = 'queued',
    embedding_attempts = v.attempts,
    payload = CASE WHEN v.error_code IS NULL THEN si.payload
              ELSE si.payload || jsonb_build_object(
                  'last_error', v.error, 'last_error_code', v.error_code,
                  'first_failure_at', COALESCE(si.payload->>'first_failure_at', now()::text))
              END
FROM v JOIN jobs ON jobs.id = v.job_id
WHERE si.object_type = v.object_type AND si.object_id = v.object_id
  AND si.embedding_status = 'processing'
RETURNING si.object_id;

-- name: dead_letter_jobs
-- The jobs of rows about to be dead-lettered (dead_letter_rows) leave the queue for good.
UPDATE embedding_jobs SET status = 'dlq' WHERE id = ANY (%(ids)s);

-- name: dead_letter_rows
-- Rows out of attempts, or that can never succeed. Setting 'failed' fires move_to_dlq(),
-- which files the row in embedding_dlq and leaves it 'dlq'.
UPDATE search_index si
SET embedding_status = 'failed',
    embedding_attempts = v.attempts,
    payload = si.payload || jsonb_build_object(
        'last_error', v.error, 'last_error_code', v.error_code,
        'first_failure_at', COALESCE(si.payload->>'first_failure_at', now()::text))
FROM unnest(%(object_types)s::text[], %(object_ids)s::uuid[], %(attempts)s::int[],
            %(error_codes)s::text[], %(errors)s::text[])
     AS v (object_type, object_id, attempts, error_code, error)
WHERE si.object_type = v.object_type AND si.object_id = v.object_id
  AND si.embedding_status = 'processing'
RETURNING si.object_id;

-- name: heartbeat
-- Renew the leases of everything this worker holds.
UPDATE embedding_jobs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE yacht_id = %(yacht_id)s AND status = 'processing' AND claimed_by = %(worker)s;

-- name: queue_state
-- What is left for a yacht: decides whether the worker may exit, and feeds /health.
-- One count per status, each through its partial index (embedding_jobs_claim,
-- embedding_jobs_processing): `status IN (...)` matches neither, and was a sequential scan
-- of the whole table, the fleet's queue and its history (137 ms at 670,000 queued rows).
SELECT q.queued, p.processing, q.ready, q.next_in_seconds
FROM (SELECT count(*) AS queued,
             count(*) FILTER (WHERE available_at <= now()) AS ready,
             EXTRACT(EPOCH FROM min(available_at) - now()) AS next_in_seconds
      FROM embedding_jobs
      WHERE yacht_id = %(yacht_id)s AND status = 'queued') q,
     (SELECT count(*) AS processing
      FROM embedding_jobs
      WHERE yacht_id = %(yacht_id)s AND status = 'processing') p;

-- name: embedding_dimensions
-- The declared length of search_index.embedding (vector's typmod is its dimension).
SELECT atttypmod FROM pg_attribute
WHERE attrelid = 'search_index'::regclass AND attname = 'embedding';

-- name: fleet_figures
-- The operator's one grouped query per tick: every watched yacht's rows by type and
-- status, not one query per backfill. By type, because rows of a backfill's
-- skipObjectTypes stay pending on purpose and are no work to admit it for.
SELECT yacht_id, object_type,
       count(*) AS total,
       count(*) FILTER (WHERE embedding_status = 'embedded') AS embedded,
       count(*) FILTER (WHERE embedding_status = 'pending' OR embedding_status IS NULL)
           AS pending,
       count(*) FILTER (WHERE embedding_status = 'queued') AS queued,
       count(*) FILTER (WHERE embedding_status = 'processing') AS processing,
       count(*) FILTER (WHERE embedding_status = 'failed') AS failed,
       count(*) FILTER (WHERE embedding_status = 'dlq') AS dlq
FROM search_index
WHERE yacht_id = ANY (%(yacht_ids)s::uuid[])
GROUP BY yacht_id, object_type;

-- name: fleet_dead_letters
SELECT yacht_id, count(*)
FROM embedding_dlq
WHERE resolved_at IS NULL AND yacht_id = ANY (%(yacht_ids)s::uuid[])
GROUP BY yacht_id;

-- name: drift_stale
-- Rows whose source record changed after the row was last projected, plus the tolerance
-- (the drift check, for every yacht of one source at once). {table},
-- {id_column} and {updated_column} are identifiers from the CRD, composed with
-- psycopg2.sql.Identifier; everything else is a parameter.
SELECT si.yacht_id, count(*)
FROM search_index si
JOIN unnest(%(yacht_ids)s::uuid[], %(tolerances)s::int[]) AS t (yacht_id, minutes)
  ON t.yacht_id = si.yacht_id
JOIN {table} src ON src.{id_column} = si.object_id
WHERE si.object_type = %(object_type)s
  AND src.{updated_column} > si.updated_at + make_interval(mins => t.minutes)
GROUP BY si.yacht_id;

-- name: drift_requeue
-- drift.autoRequeue: stale rows are marked for re-embedding (queued and processing rows
-- are already on their way) and stamped, so they no longer count as stale.
UPDATE search_index si
SET embedding_status = CASE WHEN si.embedding_status IN ('queued', 'processing')
                            THEN si.embedding_status ELSE 'pending' END,
    embedding_attempts = 0,
    updated_at = now()
FROM unnest(%(yacht_ids)s::uuid[], %(tolerances)s::int[]) AS t (yacht_id, minutes),
     {table} src
WHERE t.yacht_id = si.yacht_id
  AND src.{id_column} = si.object_id
  AND si.object_type = %(object_type)s
  AND src.{updated_column} > si.updated_at + make_interval(mins => t.minutes)
RETURNING si.yacht_id;

-- name: search_rank
-- Where an object ranks among its yacht's embedded rows for a query vector (cosine
-- distance, 1 = first; object_id breaks ties so the rank is stable).
SELECT rank
FROM (SELECT object_id,
             row_number() OVER (ORDER BY embedding <=> %(query_vector)s::vector, object_id)
                 AS rank
      FROM search_index
      WHERE yacht_id = %(yacht_id)s AND embedding IS NOT NULL) ranked
WHERE object_id = %(object_id)s;

-- name: record_click
-- A click from the search front end; the query arrives normalised (querytext.py). Written
-- only when the clicked object is a row of the click's yacht: no row returned otherwise.
INSERT INTO search_click_events (
    org_id, yacht_id, user_id, search_id, query_text, query_normalized,
    clicked_object_type, clicked_object_id, click_position, search_timestamp,
    click_timestamp, dwell_time_ms, was_successful)
SELECT %(org_id)s, %(yacht_id)s, %(user_id)s, %(search_id)s, %(query_text)s,
       %(query_normalized)s, %(object_type)s, %(object_id)s, %(position)s,
       %(search_timestamp)s, COALESCE(%(clicked_at)s, now()), %(dwell_time_ms)s,
       %(was_successful)s
WHERE EXISTS (SELECT 1 FROM search_index
              WHERE object_type = %(object_type)s AND object_id = %(object_id)s
                AND yacht_id = %(yacht_id)s)
RETURNING id;

-- name: feedback_candidates
-- The click aggregation: a normalised query that led to enough clicks on the
-- same object, ranked high enough on average, within the window. Clicks on objects
-- deleted since are gone with them (ON DELETE CASCADE) and the join drops any other.
SELECT e.yacht_id, e.clicked_object_type, e.clicked_object_id, e.query_normalized,
       count(*) AS clicks, round(avg(e.click_position), 2) AS avg_position,
       si.search_text, md5(si.search_text) AS text_hash
FROM search_click_events e
JOIN search_index si
  ON si.object_type = e.clicked_object_type AND si.object_id = e.clicked_object_id
 AND si.yacht_id = e.yacht_id
WHERE e.click_timestamp > now() - make_interval(days => %(window_days)s)
  AND (%(yacht_id)s::uuid IS NULL OR e.yacht_id = %(yacht_id)s::uuid)
GROUP BY e.yacht_id, e.clicked_object_type, e.clicked_object_id, e.query_normalized,
         si.search_text
HAVING count(*) >= %(min_clicks)s AND avg(e.click_position) <= %(max_avg_position)s
ORDER BY e.yacht_id, e.clicked_object_type, e.clicked_object_id, count(*) DESC,
         e.query_normalized;

-- name: feedback_append
-- Append learned terms only if the text is still the text the terms were chosen against
-- (md5 guard: no lost update when the projection rewrites it meanwhile), and queue the row
-- for re-embedding so the next search finds it.
WITH appended AS (
    UPDATE search_index
    SET search_text = search_text || %(suffix)s,
        embedding_status = 'queued', embedding_queued_at = now(), embedding_attempts = 0,
        updated_at = now()
    WHERE object_type = %(object_type)s AND object_id = %(object_id)s
      AND md5(search_text) = %(text_hash)s
    RETURNING object_type, object_id, yacht_id
), queued AS (
    -- A row already waiting in the queue keeps its job: the claim reads the new text.
    INSERT INTO embedding_jobs (object_type, object_id, yacht_id, priority)
    SELECT object_type, object_id, yacht_id, %(priority)s FROM appended
    ON CONFLICT (object_type, object_id) WHERE status = 'queued' DO NOTHING
)
SELECT count(*) FROM appended;

-- name: feedback_row
SELECT search_text, md5(search_text) FROM search_index
WHERE object_type = %(object_type)s AND object_id = %(object_id)s;

-- name: feedback_log
INSERT INTO feedback_learning_log (run_date, yacht_id, terms_added, objects_updated, details)
VALUES (now(), %(yacht_id)s, %(terms_added)s, %(objects_updated)s, %(details)s)
RETURNING id;

-- name: feedback_last_runs
-- The latest run per yacht, for the operator's metrics.
SELECT DISTINCT ON (yacht_id) yacht_id, terms_added, objects_updated,
       EXTRACT(EPOCH FROM run_date)
FROM feedback_learning_log
WHERE yacht_id IS NOT NULL
ORDER BY yacht_id, run_date DESC;

-- name: dlq_list
SELECT d.id, d.yacht_id, d.object_type, d.object_id, d.error_code, d.attempts,
       d.last_failure_at, d.resolved_at, d.resolution_type,
       left(regexp_replace(COALESCE(d.error_message, ''), '\s+', ' ', 'g'), 80)
FROM embedding_dlq d
WHERE (%(yacht_id)s::uuid IS NULL OR d.yacht_id = %(yacht_id)s::uuid)
  AND (%(code)s::text IS NULL OR d.error_code = %(code)s::text)
  AND (%(all)s OR d.resolved_at IS NULL)
ORDER BY d.last_failure_at DESC, d.id
LIMIT %(limit)s;

-- name: dlq_retry
-- Unresolved dead letters go back to the queue with their attempts reset. The DLQ entry
-- stays open until the row embeds (then the worker resolves it as retry_success), so a
-- retry that fails again is not lost. Idempotent: a row already retried is no longer 'dlq'.
WITH chosen AS (
    SELECT d.object_type, d.object_id
    FROM embedding_dlq d
    JOIN search_index si ON si.object_type = d.object_type AND si.object_id = d.object_id
    WHERE d.resolved_at IS NULL AND si.embedding_status = 'dlq'
      AND (%(yacht_id)s::uuid IS NULL OR d.yacht_id = %(yacht_id)s::uuid)
      AND (%(code)s::text IS NULL OR d.error_code = %(code)s::text)
      AND (%(ids)s::uuid[] IS NULL OR d.id = ANY (%(ids)s::uuid[]))
    FOR UPDATE OF si
), retried AS (
    UPDATE search_index si
    SET embedding_status = 'queued', embedding_attempts = 0, embedding_queued_at = now(),
        payload = si.payload - 'last_error' - 'last_error_code' - 'first_failure_at'
    FROM chosen c
    WHERE si.object_type = c.object_type AND si.object_id = c.object_id
    RETURNING si.object_type, si.object_id, si.yacht_id
), queued AS (
    INSERT INTO embedding_jobs (object_type, object_id, yacht_id, priority)
    SELECT object_type, object_id, yacht_id, %(priority)s FROM retried
    ON CONFLICT (object_type, object_id) WHERE status = 'queued' DO NOTHING
)
SELECT yacht_id, count(*) FROM retried GROUP BY yacht_id;

-- name: dlq_abandon
-- Give up on unresolved dead letters: resolved as abandoned, the row stays 'dlq'
-- (not embedded, not work). Idempotent: only unresolved entries change, and only those
-- still waiting in the DLQ: a retried row (queued again) is on its way, not abandoned.
UPDATE embedding_dlq d
SET resolved_at = now(), resolution_type = 'abandoned'
WHERE d.resolved_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM search_index si
                  WHERE si.object_type = d.object_type AND si.object_id = d.object_id
                    AND si.embedding_status <> 'dlq')
  AND (%(yacht_id)s::uuid IS NULL OR d.yacht_id = %(yacht_id)s::uuid)
  AND (%(code)s::text IS NULL OR d.error_code = %(code)s::text)
  AND (%(ids)s::uuid[] IS NULL OR d.id = ANY (%(ids)s::uuid[]))
RETURNING d.yacht_id;

-- name: active_yachts
-- `f1backfill plan`: a YachtBackfill for every active yacht, the highest tier first.
SELECT y.id, y.name, y.tier
FROM yachts y
WHERE y.status = 'active'
ORDER BY CASE y.tier WHEN 'enterprise' THEN 0 WHEN 'premium' THEN 1 ELSE 2 END, y.name, y.id;

-- name: search_signatures
-- The embeddings a yacht's rows carry (provider, model, length) and how many rows each:
-- a query must be embedded as they were. The length is the column's type (pgvector's
-- typmod), which every stored vector has; only a column without one makes each vector be
-- read for it.
SELECT s.embedding_provider, s.embedding_model,
       coalesce(nullif(a.atttypmod, -1), vector_dims(s.embedding)), count(*)
FROM search_index s
JOIN pg_attribute a ON a.attrelid = 'search_index'::regclass AND a.attname = 'embedding'
WHERE s.yacht_id = %(yacht_id)s AND s.embedding_status = 'embedded'
GROUP BY 1, 2, 3;

-- name: search_nearest
-- The yacht's embedded rows nearest the query vector (cosine distance), of the types the
-- caller's role may see (NULL: every type), embedded as the query was. An exact scan of
-- one yacht's rows: the yacht filter comes first, so recall is complete. Each row's vector
-- is stored out of line (TOAST), so it is read once: the distance is computed once, in the
-- inner query, and the snippet is cut for the top rows only. No `vector_dims` filter: the
-- column's type fixes every vector's length, and the caller has checked that the query's
-- length is the same (`search_signatures`).
SELECT object_type, object_id, 1 - distance, left(search_text, %(snippet_chars)s)
FROM (SELECT object_type, object_id, search_text,
             embedding <=> %(vector)s::vector AS distance
      FROM search_index
      WHERE yacht_id = %(yacht_id)s AND embedding_status = 'embedded'
        AND (%(object_types)s::text[] IS NULL OR object_type = ANY (%(object_types)s::text[]))
        AND embedding_model = %(model)s
        AND (embedding_provider = %(provider)s OR embedding_provider IS NULL)
      ORDER BY distance, object_type, object_id
      LIMIT %(limit)s) AS nearest
ORDER BY distance, object_type, object_id;

-- name: search_recent
-- An empty query: the yacht's most recently updated embedded rows (no score).
SELECT object_type, object_id, NULL::float8, left(search_text, %(snippet_chars)s)
FROM search_index
WHERE yacht_id = %(yacht_id)s AND embedding_status = 'embedded'
  AND (%(object_types)s::text[] IS NULL OR object_type = ANY (%(object_types)s::text[]))
ORDER BY updated_at DESC, object_type, object_id
LIMIT %(limit)s;

-- name: top_queries
-- A yacht's most clicked queries of the last days: what a login pre-warms.
SELECT query_normalized
FROM search_click_events
WHERE yacht_id = %(yacht_id)s AND click_timestamp > now() - make_interval(days => %(days)s)
GROUP BY query_normalized
ORDER BY count(*) DESC, query_normalized
LIMIT %(limit)s;

-- name: budget_open
-- A worker joins its account's shared bucket: the row is created empty if it is new, and
-- the account's limits are the ones this worker was configured with (the operator gives
-- every Job the same). The level is refilled at the old rate before the rate changes.
INSERT INTO provider_budget AS b (account, requests_per_minute, tokens_per_minute)
VALUES (%(account)s, %(requests_per_minute)s, %(tokens_per_minute)s)
ON CONFLICT (account) DO UPDATE SET
    requests = least(EXCLUDED.requests_per_minute, b.requests + b.requests_per_minute / 60.0
        * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at))::float8),
    tokens = least(EXCLUDED.tokens_per_minute, b.tokens + b.tokens_per_minute / 60.0
        * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at))::float8),
    requests_per_minute = EXCLUDED.requests_per_minute,
    tokens_per_minute = EXCLUDED.tokens_per_minute,
    updated_at = greatest(b.updated_at, clock_timestamp())
RETURNING requests, tokens, requests_per_minute, tokens_per_minute, requests_adjusted,
          tokens_adjusted, 0.0::float8, 0.0::float8;

-- name: budget_apply
-- The shared bucket's one statement per reservation or settlement. The levels are refilled
-- by the time elapsed on the database's clock (capped at one minute's budget), then moved:
-- - by `requests`/`tokens` when `seen_*` is NULL: a reservation takes (-1, -tokens), a
--   settlement gives back what the provider did not count;
-- - else to `seen_*`, the provider's level read from a response's headers: `expected_*` is
--   the level the reservation predicted for that moment less the adjustments applied until
--   then, so adding the adjustments applied since gives what this row predicts now
--   (ratelimit.correction).
-- The result is capped again and may go below zero (budget promised to waiting requests).
-- Limits only come down here, to the provider's x-ratelimit-limit-* (NULL: unchanged).
WITH now AS (SELECT clock_timestamp() AS t), refilled AS (
    SELECT b.account, b.requests_adjusted, b.tokens_adjusted,
           least(coalesce(%(requests_limit)s::float8, b.requests_per_minute),
                 b.requests_per_minute) AS rpm,
           least(coalesce(%(tokens_limit)s::float8, b.tokens_per_minute),
                 b.tokens_per_minute) AS tpm,
           least(b.requests_per_minute, b.requests + b.requests_per_minute / 60.0
               * greatest(0, extract(epoch FROM now.t - b.updated_at))::float8) AS requests,
           least(b.tokens_per_minute, b.tokens + b.tokens_per_minute / 60.0
               * greatest(0, extract(epoch FROM now.t - b.updated_at))::float8) AS tokens,
           greatest(b.updated_at, now.t) AS t
    FROM provider_budget b, now
    WHERE b.account = %(account)s
    FOR UPDATE OF b
), moved AS (
    SELECT r.*,
           coalesce(%(seen_requests)s::float8
                    - (%(expected_requests)s::float8 + r.requests_adjusted),
                    %(requests)s::float8) AS dr,
           coalesce(%(seen_tokens)s::float8 - (%(expected_tokens)s::float8 + r.tokens_adjusted),
                    %(tokens)s::float8) AS dt
    FROM refilled r
)
UPDATE provider_budget b SET
    requests_per_minute = m.rpm,
    tokens_per_minute = m.tpm,
    requests = least(m.rpm, m.requests + m.dr),
    tokens = least(m.tpm, m.tokens + m.dt),
    requests_adjusted = m.requests_adjusted + CASE WHEN %(adjust)s THEN m.dr ELSE 0 END,
    tokens_adjusted = m.tokens_adjusted + CASE WHEN %(adjust)s THEN m.dt ELSE 0 END,
    updated_at = m.t
FROM moved m
WHERE b.account = m.account
RETURNING b.requests, b.tokens, b.requests_per_minute, b.tokens_per_minute,
          b.requests_adjusted, b.tokens_adjusted, m.dr, m.dt;
