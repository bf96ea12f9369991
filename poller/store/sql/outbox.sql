-- The transactional outbox (DESIGN §2): snapshot rows, events, notifications. The poll results
-- of one instance cycle are written by these statements inside ONE transaction, which ends with
-- the fenced `settle` of cursors.sql (watermarks and lease).

-- name: snapshots
-- The snapshot rows a cycle's diff needs: every row of the pairs in $2 (complete listings: the
-- set difference needs them all), and the named objects ($3 resource, $4 object id) of others.
SELECT resource, object_id, sync_token, last_updated, active, deleted
FROM object_snapshots
WHERE instance_id = $1 AND resource = ANY($2::text[])
UNION ALL
SELECT s.resource, s.object_id, s.sync_token, s.last_updated, s.active, s.deleted
FROM unnest($3::text[], $4::text[]) AS w (resource, object_id)
JOIN object_snapshots s
  ON s.instance_id = $1 AND s.resource = w.resource AND s.object_id = w.object_id

-- name: objects
-- The full objects kept for `event.poller.changes` ($2 resource, $3 object id), compressed.
SELECT s.resource, s.object_id, s.object
FROM unnest($2::text[], $3::text[]) AS w (resource, object_id)
JOIN object_snapshots s
  ON s.instance_id = $1 AND s.resource = w.resource AND s.object_id = w.object_id
WHERE s.object IS NOT NULL

-- name: write_changes
-- Snapshot upserts and event inserts of all the cycle's pairs in one statement (a data-modifying
-- WITH always runs to completion). Events go in in change order. ON CONFLICT DO NOTHING: a
-- version already in the outbox (an earlier poll that crashed after commit, another replica) is
-- not inserted again; RETURNING lists only the new rows.
-- $14: the full object a row keeps (`event.poller.changes`, zlib), kept only while the instance, as
-- committed now, still asks for it: a cycle that began before the option was turned off does
-- not store objects again after they were freed. $15: the events' changes (NULL: no key),
-- likewise kept only while the instance asks for them (that cycle's events have no `changes`).
WITH keeps AS (
    SELECT coalesce((SELECT changes FROM instances WHERE id = $1), false) AS objects
), snapshots AS (
    INSERT INTO object_snapshots (instance_id, resource, object_id, sync_token, last_updated,
                                  active, deleted, object)
    SELECT $1, s.resource, s.object_id, s.sync_token, s.last_updated, s.active, s.deleted,
           CASE WHEN keeps.objects THEN s.object END
    FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::boolean[],
                $7::boolean[], $14::bytea[])
         AS s (resource, object_id, sync_token, last_updated, active, deleted, object)
    CROSS JOIN keeps
    ON CONFLICT (instance_id, resource, object_id) DO UPDATE
    SET sync_token = EXCLUDED.sync_token, last_updated = EXCLUDED.last_updated,
        active = EXCLUDED.active, deleted = EXCLUDED.deleted, object = EXCLUDED.object
)
INSERT INTO events (instance_id, resource, object_id, version, event_type, occurred_at, raw,
                    changes)
SELECT $1, e.resource, e.object_id, e.version, e.event_type, e.occurred_at, e.raw::json,
       CASE WHEN keeps.objects THEN e.changes::json END
FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::text[],
            $15::text[])
     WITH ORDINALITY AS e (resource, object_id, version, event_type, occurred_at, raw, changes, n)
CROSS JOIN keeps
ORDER BY e.n
ON CONFLICT ON CONSTRAINT events_object_version_key DO NOTHING
RETURNING id, resource, object_id, version

-- name: notify
-- Notification rows (up to POLLER_EVENTS_PER_NOTIFICATION new events of one pair each, in change
-- order), their events attached in order, and one pg_notify so the dispatcher wakes at COMMIT.
WITH made AS (
    INSERT INTO notifications (event_id, instance_id, resource, event_count)
    SELECT n.event_id, $1, n.resource, n.event_count
    FROM unnest($2::uuid[], $3::text[], $4::integer[])
         WITH ORDINALITY AS n (event_id, resource, event_count, k)
    ORDER BY n.k
    RETURNING id, event_id
), attached AS (
    UPDATE events AS e SET notification_id = made.id, position = a.position
    FROM unnest($5::bigint[], $6::uuid[], $7::integer[]) AS a (row_id, event_id, position)
    JOIN made ON made.event_id = a.event_id
    WHERE e.id = a.row_id
    RETURNING e.id
)
SELECT (SELECT count(*) FROM made) AS notifications,
       (SELECT count(*) FROM attached) AS attached,
       pg_notify('qbo_poller_outbox', '')::text AS woke

-- name: count_live_before
-- The cap path's delete check (poller.detect.feed): live snapshot rows of a pair not among the
-- objects of the answer being checked ($4): those last changed before $3, and the others.
SELECT count(*) FILTER (WHERE last_updated < $3) AS before,
       count(*) FILTER (WHERE last_updated >= $3) AS since
FROM object_snapshots
WHERE instance_id = $1 AND resource = $2 AND NOT deleted AND object_id <> ALL($4::text[])
