-- qbo-poller schema, version 10: field-level changes (DESIGN §12, `event.poller.changes`).
--
-- instances.changes: the instance asks for them. Only then do its snapshot rows keep the last
-- full object; turning the option off sets them back to NULL.
--
-- object_snapshots.object: that object, its JSON text (QBO's, decimal literals as written)
-- compressed with zlib by the daemon. Not a `json` column left to PostgreSQL: TOAST only
-- compresses rows over ~2 kB (TOAST_TUPLE_THRESHOLD; toast_tuple_target does not lower it),
-- and QBO objects are 0.6-1.3 kB, so they were stored whole; zlib halves them (bench/changes.py).
-- STORAGE EXTERNAL: PostgreSQL does not try to compress it again. The `json` column of version 1
-- was never written; dropping it and adding the new one changes only the catalog (no rewrite).
ALTER TABLE instances ADD COLUMN changes boolean NOT NULL DEFAULT false;
ALTER TABLE object_snapshots DROP COLUMN object;
ALTER TABLE object_snapshots ADD COLUMN object bytea;
ALTER TABLE object_snapshots ALTER COLUMN object SET STORAGE EXTERNAL;
--
-- events.changes: the UPDATED event's changes as JSON text: SQL NULL when the event carries
-- no `changes` key (CREATED, DELETED, instances without the option), the JSON `null` when no
-- previous full object was known, else the list. `json`, not `jsonb`, so values stay verbatim.
ALTER TABLE events ADD COLUMN changes json;
