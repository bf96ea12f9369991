-- The console's sessions and its per-instance counts (poller/store/console.py).

-- name: create_session
INSERT INTO console_sessions (id_hash, user_id, user_secret_hash)
SELECT $1, u.id, u.secret_hash FROM api_users u WHERE u.id = $2

-- name: prune_sessions
DELETE FROM console_sessions WHERE last_seen_at < now() - make_interval(secs => $1)

-- name: touch_session
-- The session's user, when the session exists, is not idle longer than $2 seconds and the
-- user's secret is still the one it signed in with; its idle clock restarts.
UPDATE console_sessions s SET last_seen_at = now()
FROM api_users u
WHERE s.id_hash = $1 AND u.id = s.user_id AND u.secret_hash = s.user_secret_hash
  AND s.last_seen_at >= now() - make_interval(secs => $2)
RETURNING u.id, u.name, u.admin, s.oauth_state_hash, s.oauth_purpose, s.pending_code_enc,
          s.pending_realm_id

-- name: end_session
DELETE FROM console_sessions WHERE id_hash = $1

-- name: start_oauth
UPDATE console_sessions
SET oauth_state_hash = $2, oauth_purpose = $3, pending_code_enc = NULL, pending_realm_id = NULL
WHERE id_hash = $1

-- name: finish_oauth
-- Only the session that started the flow, with the state it was given, may finish it; the
-- state is spent either way.
UPDATE console_sessions
SET oauth_state_hash = NULL, pending_code_enc = $3, pending_realm_id = $4
WHERE id_hash = $1 AND oauth_state_hash = $2
RETURNING oauth_purpose

-- name: clear_oauth
UPDATE console_sessions
SET oauth_state_hash = NULL, oauth_purpose = NULL, pending_code_enc = NULL,
    pending_realm_id = NULL
WHERE id_hash = $1

-- name: instance_counts
-- Per instance: events detected in the last 24 h, and its pending / dead / held
-- notifications (the Instances page).
SELECT i.id,
       (SELECT count(*) FROM events e
        WHERE e.instance_id = i.id AND e.created_at > now() - interval '24 hours')
           AS events_24h,
       (SELECT count(*) FROM notifications n
        WHERE n.instance_id = i.id AND n.status = 'pending') AS pending,
       (SELECT count(*) FROM notifications n
        WHERE n.instance_id = i.id AND n.status = 'dead') AS dead,
       (SELECT count(*) FROM notifications n
        WHERE n.instance_id = i.id AND n.status = 'held') AS held
FROM instances i
WHERE i.id = ANY($1::bigint[]) AND ($2::bigint IS NULL OR i.owner_user_id = $2)
