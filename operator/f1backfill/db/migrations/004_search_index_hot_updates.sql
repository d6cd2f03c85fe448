-- 004: a row's status changes become HOT updates (no new index entries).
-- A row changes status three times on its way to an embedding (queued, processing,
-- embedded). With embedding_status in an index, each change wrote a new entry into every
-- index of search_index, the primary key among them: its keys are random UUIDs, so a
-- yacht's rows touch leaf pages across the whole fleet's index, a working set that grows
-- with the fleet, not with the yacht. Indexed on the yacht alone, and with room left on
-- each page for a row's next version, a status change stays on its page.
CREATE INDEX IF NOT EXISTS search_index_yacht ON search_index (yacht_id);
DROP INDEX IF EXISTS search_index_yacht_status;
-- New pages keep 30% free for the next version of their rows (existing pages as they are
-- until rewritten).
ALTER TABLE search_index SET (fillfactor = 70);
