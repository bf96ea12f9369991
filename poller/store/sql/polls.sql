-- Poll requests (DESIGN §2, §11): make pairs due now, and wake the replica holding the lease.

-- name: request_poll
-- The matching pairs of active, events-enabled instances become due now ($1 instance id, $2
-- realm, $3 resource names; a NULL filter matches everything), and ONE pg_notify on
-- qbo_poller_poll names their instances and the resources, delivered at COMMIT (of this
-- statement, or of the caller's transaction). No pair matched: no notification. More instances
-- than a notification payload can carry (8000 bytes) are named as NULL: "every instance".
WITH due AS (
    UPDATE pair_cursors AS p SET next_due_at = now(), updated_at = now()
    FROM instances AS i
    WHERE i.id = p.instance_id
      AND i.status = 'active' AND i.events_enabled
      AND ($1::bigint IS NULL OR i.id = $1::bigint)
      AND ($2::text IS NULL OR i.realm_id = $2::text)
      AND ($3::text[] IS NULL OR p.resource = ANY($3::text[]))
    RETURNING p.instance_id
), woken AS (
    SELECT coalesce(array_agg(DISTINCT instance_id ORDER BY instance_id), '{}') AS ids,
           count(*) AS pairs
    FROM due
)
SELECT ids, pairs,
       CASE WHEN pairs > 0 THEN
           pg_notify('qbo_poller_poll', json_build_object(
               'instances', CASE WHEN cardinality(ids) <= 500 THEN ids END,
               'resources', $3::text[])::text)::text
       END AS notified
FROM woken

-- name: due_pairs
-- The listener's check after a reconnect: pairs of these instances due by now (a request may
-- have come while nobody listened).
SELECT instance_id, resource FROM pair_cursors
WHERE instance_id = ANY($1::bigint[]) AND next_due_at <= now()
ORDER BY instance_id, resource
