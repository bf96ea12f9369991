-- Event records of the HTTP API (DESIGN §9): one per notification (callback message), read
-- from the outbox (poller/store/api_events.py). $1 owner: NULL (an admin) or the user's id.

-- name: records
-- Newest first; $9 is the keyset cursor (notification ids below it).
SELECT n.id, n.event_id, n.instance_id, n.resource, n.status, n.attempts, n.created_at
FROM notifications n JOIN instances i ON i.id = n.instance_id
WHERE ($1::bigint IS NULL OR i.owner_user_id = $1)
  AND ($2::bigint IS NULL OR n.instance_id = $2)
  AND ($3::timestamptz IS NULL OR n.created_at >= $3)
  AND ($4::timestamptz IS NULL OR n.created_at <= $4)
  AND ($5::text IS NULL OR n.resource = $5)
  AND ($6::text IS NULL OR n.status = $6)
  AND ($7::boolean IS NULL OR (n.attempts > 0) = $7)
  AND ($8::text IS NULL OR EXISTS (
        SELECT 1 FROM events e WHERE e.notification_id = n.id AND e.event_type = $8))
  AND ($10::text IS NULL OR EXISTS (
        SELECT 1 FROM events e WHERE e.notification_id = n.id AND e.object_id = $10))
  AND n.id < $9
ORDER BY n.id DESC
LIMIT $11

-- name: record
SELECT n.id, n.event_id, n.instance_id, n.resource, n.status, n.attempts, n.created_at
FROM notifications n JOIN instances i ON i.id = n.instance_id
WHERE n.event_id = $2 AND ($1::bigint IS NULL OR i.owner_user_id = $1)
  AND ($3::bigint IS NULL OR n.instance_id = $3)

-- name: attempts
SELECT notification_id, started_at, status_code, error, duration_ms
FROM delivery_attempts WHERE notification_id = ANY($1::bigint[])
ORDER BY notification_id, attempt

-- name: queued
-- Deliveries waiting for a redelivery: dead letters and held ones ($2: one status or both),
-- optionally to one callback URL ($3: the instance's current URL or the one held for).
SELECT n.id, n.event_id, n.instance_id, n.status, n.created_at, n.last_attempt_at,
       COALESCE(n.target_url, i.callback_url) AS url
FROM notifications n JOIN instances i ON i.id = n.instance_id
WHERE ($1::bigint IS NULL OR i.owner_user_id = $1)
  AND n.status = ANY($2::text[])
  AND ($3::text IS NULL OR COALESCE(n.target_url, i.callback_url) = $3)
ORDER BY n.id
LIMIT $4
