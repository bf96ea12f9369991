-- name: lock_by_name
SELECT id, realm_id, status, provider_fingerprint, client_id, client_secret_enc, redirect_uri,
       events_enabled, vendor_type, callback_url, signature_key_enc, refresh_interval_s, resources,
       timezone, initial_mode, deactivated_as_deleted, tags, configuration, webhook_verifier_enc,
       changes
FROM instances WHERE name = $1 FOR UPDATE

-- name: lock_by_id
SELECT id, realm_id, status, provider_fingerprint, client_id, client_secret_enc, redirect_uri,
       events_enabled, vendor_type, callback_url, signature_key_enc, refresh_interval_s, resources,
       timezone, initial_mode, deactivated_as_deleted, tags, configuration, webhook_verifier_enc,
       changes
FROM instances WHERE id = $1 FOR UPDATE

-- name: rename
UPDATE instances SET name = $2, config_version = config_version + 1, updated_at = now()
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.name = $2 AND o.id <> $1)
RETURNING id

-- name: insert
INSERT INTO instances (name, element_key, realm_id, status, client_id, client_secret_enc,
    redirect_uri, events_enabled, vendor_type, callback_url, signature_key_enc,
    refresh_interval_s, resources, timezone, initial_mode, deactivated_as_deleted, tags,
    configuration, provider_fingerprint, webhook_verifier_enc, changes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21)
RETURNING id

-- name: update
UPDATE instances SET element_key = $2, realm_id = $3, status = $4, status_reason = $5,
    client_id = $6, client_secret_enc = $7, redirect_uri = $8, events_enabled = $9,
    vendor_type = $10, callback_url = $11, signature_key_enc = $12, refresh_interval_s = $13,
    resources = $14, timezone = $15, initial_mode = $16, deactivated_as_deleted = $17, tags = $18,
    configuration = $19, provider_fingerprint = $20, webhook_verifier_enc = $21, changes = $22,
    config_version = config_version + 1,
    updated_at = now()
WHERE id = $1

-- name: forget_objects
-- `event.poller.changes` turned off: free the full objects its snapshot rows kept.
UPDATE object_snapshots SET object = NULL WHERE instance_id = $1 AND object IS NOT NULL

-- name: upsert_credentials
INSERT INTO oauth_credentials (instance_id, realm_id, auth_code_enc, refresh_token_enc)
VALUES ($1, $2, $3, $4)
ON CONFLICT (instance_id) DO UPDATE SET realm_id = EXCLUDED.realm_id,
    auth_code_enc = EXCLUDED.auth_code_enc, refresh_token_enc = EXCLUDED.refresh_token_enc,
    access_token_enc = NULL, access_expires_at = NULL, refresh_expires_at = NULL,
    refresh_hard_expires_at = NULL, updated_at = now()

-- name: add_pairs
INSERT INTO pair_cursors (instance_id, resource, entity)
SELECT $1, r.resource, r.entity FROM unnest($2::text[], $3::text[]) AS r(resource, entity)
ON CONFLICT (instance_id, resource) DO NOTHING

-- name: drop_pairs_except
DELETE FROM pair_cursors WHERE instance_id = $1 AND NOT (resource = ANY($2::text[]))

-- name: drop_all_pairs
DELETE FROM pair_cursors WHERE instance_id = $1

-- name: list
SELECT i.id, i.name, i.realm_id, i.status, i.status_reason, i.events_enabled, i.vendor_type,
       i.callback_url, i.refresh_interval_s, i.resources, i.tags, i.config_version,
       i.created_at, i.updated_at,
       (SELECT min(p.watermark) FROM pair_cursors p WHERE p.instance_id = i.id) AS oldest_watermark,
       (SELECT count(*) FROM notifications n WHERE n.instance_id = i.id AND n.status = 'pending') AS pending,
       (SELECT count(*) FROM notifications n WHERE n.instance_id = i.id AND n.status = 'dead') AS dead
FROM instances i ORDER BY i.name

-- name: lock_for_removal
-- The instance's undelivered notifications, its row locked until the removal's transaction ends
-- (a poll's commit takes a key-share lock on it to attach events, so it waits or fails cleanly).
SELECT i.id,
       (SELECT count(*) FROM notifications n WHERE n.instance_id = i.id AND n.status = 'pending') AS pending,
       (SELECT count(*) FROM notifications n WHERE n.instance_id = i.id AND n.status = 'held') AS held,
       (SELECT count(*) FROM notifications n WHERE n.instance_id = i.id AND n.status = 'dead') AS dead
FROM instances i WHERE i.name = $1
FOR UPDATE OF i

-- name: remove
DELETE FROM instances WHERE name = $1 RETURNING id

-- name: mark_needs_reconnect
-- The OAuth grant was lost (invalid_grant) while the instance was active: it waits for new
-- providerData. A paused or disabled instance keeps its status (it was not polling); the
-- config_version bump makes every replica stop its pollers.
UPDATE instances SET status = 'needs_reconnect', status_reason = $2,
    config_version = config_version + 1, updated_at = now()
WHERE id = $1 AND status = 'active'

-- name: set_status
UPDATE instances SET status = $2, status_reason = $3, config_version = config_version + 1,
    updated_at = now()
WHERE id = $1 AND status IS DISTINCT FROM $2

-- name: count_pollable
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'active' AND events_enabled) AS pollable
FROM instances
