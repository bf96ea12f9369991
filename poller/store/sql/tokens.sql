-- OAuth credentials (poller/store/tokens.py). Token columns hold SecretBox-sealed values.
-- `updated_at` is the row's version: it changes whenever tokens or the code are written (here
-- or by a reconnect in instances.sql), never for the lease. Writes after a token request are
-- fenced on the version their lease was taken at.

-- name: load
SELECT c.instance_id, i.name AS instance_name, c.realm_id, i.status, i.client_id,
       i.client_secret_enc, i.redirect_uri, c.auth_code_enc, c.access_token_enc,
       c.access_expires_at, c.refresh_token_enc, c.refresh_expires_at,
       c.refresh_hard_expires_at, c.refresh_count
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id
WHERE c.instance_id = $1

-- name: claim_read
-- Only the credentials row is locked, and only for the claim's short transaction. The lock
-- makes the read return the latest committed tokens: a claim that waited for another
-- process's save sees the tokens that save wrote, never the spent ones.
SELECT c.instance_id, i.name AS instance_name, c.realm_id, i.status, i.client_id,
       i.client_secret_enc, i.redirect_uri, c.auth_code_enc, c.access_token_enc,
       c.access_expires_at, c.refresh_token_enc, c.refresh_expires_at,
       c.refresh_hard_expires_at, c.refresh_count, c.updated_at AS version,
       c.refresh_holder,
       GREATEST(0, EXTRACT(EPOCH FROM c.refresh_lease_until - now()))::float8 AS lease_left_s
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id
WHERE c.instance_id = $1
FOR UPDATE OF c

-- name: claim_take
-- $3: the lease in seconds. Only called when the lease is free, lapsed, or already $2's.
UPDATE oauth_credentials
SET refresh_holder = $2, refresh_lease_until = now() + make_interval(secs => $3)
WHERE instance_id = $1

-- name: release
UPDATE oauth_credentials SET refresh_holder = NULL, refresh_lease_until = NULL
WHERE instance_id = $1 AND refresh_holder = $2

-- name: save_tokens
-- The code is spent once tokens exist: it is cleared in the same statement. Refused (no row)
-- when the row was rewritten since the lease was taken ($9): a reconnect stored a new grant,
-- or another process saved newer tokens. The lease is released only if it is still ours.
UPDATE oauth_credentials
SET auth_code_enc = NULL, access_token_enc = $2, access_expires_at = $3,
    refresh_token_enc = $4, refresh_expires_at = $5,
    refresh_hard_expires_at = COALESCE($6, refresh_hard_expires_at),
    refreshed_at = $7, refresh_count = $8, updated_at = now(),
    refresh_lease_until = CASE WHEN refresh_holder = $10 THEN NULL ELSE refresh_lease_until END,
    refresh_holder = CASE WHEN refresh_holder = $10 THEN NULL ELSE refresh_holder END
WHERE instance_id = $1 AND updated_at = $9

-- name: give_up
-- The grant is dead ($3: the code too): release the lease, keep the row's version unless the
-- code is cleared. Refused when the row was rewritten since the lease was taken ($4).
UPDATE oauth_credentials
SET auth_code_enc = CASE WHEN $3 THEN NULL ELSE auth_code_enc END,
    updated_at = CASE WHEN $3 THEN now() ELSE updated_at END,
    refresh_lease_until = CASE WHEN refresh_holder = $2 THEN NULL ELSE refresh_lease_until END,
    refresh_holder = CASE WHEN refresh_holder = $2 THEN NULL ELSE refresh_holder END
WHERE instance_id = $1 AND updated_at = $4

-- name: clear_tokens
UPDATE oauth_credentials
SET auth_code_enc = NULL, access_token_enc = NULL, access_expires_at = NULL,
    refresh_token_enc = NULL, refresh_expires_at = NULL, updated_at = now(),
    refresh_holder = NULL, refresh_lease_until = NULL
WHERE instance_id = $1
