-- Instances as the HTTP API (DESIGN §9) sees them (poller/store/api_instances.py).
-- $owner NULL means "every instance" (an admin); otherwise only that user's.

-- name: page
SELECT i.id, i.name, i.realm_id, i.status, i.events_enabled, i.vendor_type, i.callback_url,
       i.refresh_interval_s, i.resources, i.tags, i.configuration, i.client_id,
       i.signature_key_enc IS NOT NULL AS has_signature_key, i.token_enc, i.owner_user_id,
       u.name AS owner_name, i.created_at, i.updated_at,
       (SELECT max(p.last_polled_at) FROM pair_cursors p WHERE p.instance_id = i.id)
           AS last_polled_at,
       (SELECT min(p.watermark) FROM pair_cursors p WHERE p.instance_id = i.id)
           AS oldest_watermark
FROM instances i LEFT JOIN api_users u ON u.id = i.owner_user_id
WHERE ($1::bigint IS NULL OR i.owner_user_id = $1) AND i.id > $2
ORDER BY i.id
LIMIT $3

-- name: one
SELECT i.id, i.name, i.realm_id, i.status, i.events_enabled, i.vendor_type, i.callback_url,
       i.refresh_interval_s, i.resources, i.tags, i.configuration, i.client_id,
       i.signature_key_enc IS NOT NULL AS has_signature_key, i.token_enc, i.owner_user_id,
       u.name AS owner_name, i.created_at, i.updated_at,
       (SELECT max(p.last_polled_at) FROM pair_cursors p WHERE p.instance_id = i.id)
           AS last_polled_at,
       (SELECT min(p.watermark) FROM pair_cursors p WHERE p.instance_id = i.id)
           AS oldest_watermark
FROM instances i LEFT JOIN api_users u ON u.id = i.owner_user_id
WHERE i.id = $1 AND ($2::bigint IS NULL OR i.owner_user_id = $2)

-- name: editable
-- What an edit starts from: the stored body's parts (secrets sealed).
SELECT id, name, realm_id, status, owner_user_id, client_id, client_secret_enc, resources,
       signature_key_enc, tags, configuration
FROM instances WHERE id = $1 AND ($2::bigint IS NULL OR owner_user_id = $2)

-- name: name_taken
SELECT EXISTS (SELECT 1 FROM instances WHERE name = $1)

-- name: by_token_hash
SELECT id FROM instances WHERE token_hash = $1 AND ($2::bigint IS NULL OR owner_user_id = $2)

-- name: set_owner_token
UPDATE instances SET owner_user_id = $2, token_enc = $3, token_hash = $4 WHERE id = $1

-- name: save_exchanged_tokens
-- Tokens from the code exchange the API made before creating (or re-authenticating) the
-- instance: the code is spent, so none is stored.
UPDATE oauth_credentials
SET auth_code_enc = NULL, access_token_enc = $2, access_expires_at = $3,
    refresh_token_enc = $4, refresh_expires_at = $5, refresh_hard_expires_at = $6,
    refreshed_at = $7, updated_at = now()
WHERE instance_id = $1

-- name: undelivered
-- What a delete cancels: every notification not delivered yet (waiting, retrying, held, dead).
SELECT count(*) FROM notifications WHERE instance_id = $1 AND status <> 'delivered'

-- name: delete
-- Everything the instance owns goes with it (ON DELETE CASCADE): pairs, snapshots, events,
-- notifications, attempts, leases.
DELETE FROM instances WHERE id = $1 RETURNING name, resources

-- name: pause
UPDATE instances SET status = 'paused', status_reason = 'paused through the API',
    config_version = config_version + 1, updated_at = now()
WHERE id = $1 AND status IN ('active', 'disabled')

-- name: resume
UPDATE instances
SET status = CASE WHEN events_enabled THEN 'active' ELSE 'disabled' END, status_reason = NULL,
    config_version = config_version + 1, updated_at = now()
WHERE id = $1 AND status = 'paused'
