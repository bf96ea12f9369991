-- OAuth credentials (poller/store/tokens.py). Token columns hold SecretBox-sealed values.

-- name: load
SELECT c.instance_id, i.name AS instance_name, c.realm_id, i.status, i.client_id,
       i.client_secret_enc, i.redirect_uri, c.auth_code_enc, c.access_token_enc,
       c.access_expires_at, c.refresh_token_enc, c.refresh_expires_at,
       c.refresh_hard_expires_at, c.refresh_count
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id
WHERE c.instance_id = $1

-- name: lock
-- Only the credentials row is locked: instance edits are not blocked by a refresh.
SELECT c.instance_id, i.name AS instance_name, c.realm_id, i.status, i.client_id,
       i.client_secret_enc, i.redirect_uri, c.auth_code_enc, c.access_token_enc,
       c.access_expires_at, c.refresh_token_enc, c.refresh_expires_at,
       c.refresh_hard_expires_at, c.refresh_count
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id
WHERE c.instance_id = $1
FOR UPDATE OF c

-- name: save_tokens
-- The code is spent once tokens exist: it is cleared in the same statement.
UPDATE oauth_credentials
SET auth_code_enc = NULL, access_token_enc = $2, access_expires_at = $3,
    refresh_token_enc = $4, refresh_expires_at = $5,
    refresh_hard_expires_at = COALESCE($6, refresh_hard_expires_at),
    refreshed_at = $7, refresh_count = refresh_count + 1, updated_at = now()
WHERE instance_id = $1

-- name: clear_code
UPDATE oauth_credentials SET auth_code_enc = NULL, updated_at = now() WHERE instance_id = $1

-- name: clear_tokens
UPDATE oauth_credentials
SET auth_code_enc = NULL, access_token_enc = NULL, access_expires_at = NULL,
    refresh_token_enc = NULL, refresh_expires_at = NULL, updated_at = now()
WHERE instance_id = $1
