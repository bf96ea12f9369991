-- qbo-poller schema, version 10: field-level changes (DESIGN §12, `event.poller.changes`).
--
-- instances.changes: the instance asks for them. Only then do its snapshot rows keep the last
-- full object (object_snapshots.object, a `json` column since version 1: QBO's text as it
-- came, decimal literals included); turning the option off sets them back to NULL.
-- events.changes: the UPDATED event's changes as JSON text: SQL NULL when the event carries
-- no `changes` key (CREATED, DELETED, instances without the option), the JSON `null` when no
-- previous full object was known, else the list. `json`, not `jsonb`, so values stay verbatim.
ALTER TABLE instances ADD COLUMN changes boolean NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN changes json;
