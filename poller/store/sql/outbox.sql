-- The transactional outbox (DESIGN §2): snapshot rows, events, notifications. Each poll result
-- is written by these statements inside ONE transaction, together with the fenced watermark
-- update of cursors.sql.

-- name: snapshots_for
SELECT object_id, sync_token, last_updated, active, deleted
FROM object_snapshots
WHERE instance_id = $1 AND resource = $2 AND object_id = ANY($3::text[])

-- name: snapshots_all
SELECT object_id, sync_token, last_updated, active, deleted
FROM object_snapshots
WHERE instance_id = $1 AND resource = $2

-- name: upsert_snapshots
INSERT INTO object_snapshots (instance_id, resource, object_id, sync_token, last_updated, active,
                              deleted)
SELECT $1, $2, r.object_id, r.sync_token, r.last_updated, r.active, r.deleted
FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::boolean[], $7::boolean[])
     AS r(object_id, sync_token, last_updated, active, deleted)
ON CONFLICT (instance_id, resource, object_id) DO UPDATE
SET sync_token = EXCLUDED.sync_token, last_updated = EXCLUDED.last_updated,
    active = EXCLUDED.active, deleted = EXCLUDED.deleted

-- name: insert_events
-- ON CONFLICT DO NOTHING: a version already in the outbox (an earlier poll that crashed after
-- commit, another replica) is not inserted again; RETURNING lists only the new rows.
INSERT INTO events (instance_id, resource, object_id, version, event_type, occurred_at, raw)
SELECT $1, $2, r.object_id, r.version, r.event_type, r.occurred_at, r.raw::json
FROM unnest($3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
     WITH ORDINALITY AS r(object_id, version, event_type, occurred_at, raw, n)
ORDER BY r.n
ON CONFLICT ON CONSTRAINT events_object_version_key DO NOTHING
RETURNING id, object_id, version

-- name: insert_notifications
INSERT INTO notifications (event_id, instance_id, resource, event_count)
SELECT r.event_id, $1, $2, r.event_count
FROM unnest($3::uuid[], $4::integer[]) WITH ORDINALITY AS r(event_id, event_count, n)
ORDER BY r.n
RETURNING id, event_id

-- name: attach_events
UPDATE events AS e SET notification_id = r.notification_id, position = r.position
FROM unnest($1::bigint[], $2::bigint[], $3::integer[]) AS r(event_id, notification_id, position)
WHERE e.id = r.event_id

-- name: wake_dispatcher
SELECT pg_notify('qbo_poller_outbox', '')
