-- Intuit webhooks (DESIGN §11): notifications recorded before the 200, raw rejects, and what
-- the receiver needs to know about instances.

-- name: verifier_tokens
-- The sealed verifier tokens instances name (event.webhook.verifier.token).
SELECT DISTINCT webhook_verifier_enc FROM instances WHERE webhook_verifier_enc IS NOT NULL

-- name: record
-- The notifications of one request, in their order; a dedupe key already stored (Intuit's
-- retries, duplicates) is skipped. RETURNING names the new ones only.
INSERT INTO webhook_notifications (dedupe_key, format, realm_id, entity, object_id, operation,
                                   occurred_at, notification)
SELECT n.dedupe_key, n.format, n.realm_id, n.entity, n.object_id, n.operation, n.occurred_at,
       n.notification::json
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::text[])
     WITH ORDINALITY AS n (dedupe_key, format, realm_id, entity, object_id, operation,
                           occurred_at, notification, k)
ORDER BY n.k
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key

-- name: record_reject
INSERT INTO webhook_rejects (content_type, reason, body) VALUES ($1, $2, $3)

-- name: realm_known
SELECT EXISTS (SELECT 1 FROM instances WHERE realm_id = $1)

-- name: time_activity_instances
-- The instances of these realms that watch TimeActivity and would poll it now (the filter of
-- request_poll): a webhook Delete of a TimeActivity becomes their DELETED event.
SELECT i.id, i.realm_id
FROM instances AS i
JOIN pair_cursors AS p ON p.instance_id = i.id AND p.resource = 'time-activities'
WHERE i.realm_id = ANY($1::text[]) AND i.status = 'active' AND i.events_enabled
ORDER BY i.id

-- name: prune
-- Notifications and raw rejects past the retention go, in small batches. Their rows only
-- deduplicate Intuit's retries (hours, not days) and keep unreadable bodies for inspection, so
-- POLLER_DELIVERY_RETENTION is ample; without this the tables would grow for ever.
WITH doomed AS (
    SELECT id FROM webhook_notifications
    WHERE received_at < now() - make_interval(secs => $1)
    ORDER BY received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), notifications_gone AS (
    DELETE FROM webhook_notifications WHERE id IN (SELECT id FROM doomed) RETURNING 1
), old_rejects AS (
    SELECT id FROM webhook_rejects
    WHERE received_at < now() - make_interval(secs => $1)
    ORDER BY received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), rejects_gone AS (
    DELETE FROM webhook_rejects WHERE id IN (SELECT id FROM old_rejects) RETURNING 1
)
SELECT (SELECT count(*) FROM notifications_gone) + (SELECT count(*) FROM rejects_gone)
