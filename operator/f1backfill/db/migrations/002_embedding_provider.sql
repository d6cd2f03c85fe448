-- 002: which provider computed each embedding, beside its model. A search embeds its query
-- with the yacht rows' provider, model and dimensions, and refuses to compare vectors of
-- another (the hash embedder and OpenAI's model share a model name and a length). Rows
-- embedded before this migration have NULL: read as "as configured".
ALTER TABLE search_index ADD COLUMN IF NOT EXISTS embedding_provider TEXT;
