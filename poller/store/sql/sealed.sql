-- Every sealed value (SecretBox, poller/store/crypto.py) in one place, for the start-up key
-- check and `qbo-poller rekey` (poller/store/sealed.py). A new *_enc column goes here too.

-- name: instances
SELECT id, name, client_secret_enc, signature_key_enc, token_enc, webhook_verifier_enc
FROM instances ORDER BY id

-- name: instances_for_update
SELECT id, name, client_secret_enc, signature_key_enc, token_enc, webhook_verifier_enc
FROM instances ORDER BY id FOR UPDATE

-- name: credentials
SELECT c.instance_id AS id, i.name, c.auth_code_enc, c.access_token_enc, c.refresh_token_enc
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id ORDER BY c.instance_id

-- name: credentials_for_update
-- The row lock orders rekey with token refreshes (they lock the same row). `updated_at` is
-- left alone: it fences a refresh in flight, whose save must still succeed (the values are
-- the same, only their encryption changed).
SELECT c.instance_id AS id, i.name, c.auth_code_enc, c.access_token_enc, c.refresh_token_enc
FROM oauth_credentials c JOIN instances i ON i.id = c.instance_id ORDER BY c.instance_id
FOR UPDATE OF c

-- name: sessions
SELECT id_hash AS id, pending_code_enc FROM console_sessions
WHERE pending_code_enc IS NOT NULL ORDER BY id_hash

-- name: sessions_for_update
SELECT id_hash AS id, pending_code_enc FROM console_sessions
WHERE pending_code_enc IS NOT NULL ORDER BY id_hash FOR UPDATE

-- name: update_instance
UPDATE instances
SET client_secret_enc = COALESCE($2, client_secret_enc),
    signature_key_enc = COALESCE($3, signature_key_enc),
    token_enc = COALESCE($4, token_enc),
    webhook_verifier_enc = COALESCE($5, webhook_verifier_enc)
WHERE id = $1

-- name: update_credentials
UPDATE oauth_credentials
SET auth_code_enc = COALESCE($2, auth_code_enc),
    access_token_enc = COALESCE($3, access_token_enc),
    refresh_token_enc = COALESCE($4, refresh_token_enc)
WHERE instance_id = $1

-- name: update_session
UPDATE console_sessions SET pending_code_enc = COALESCE($2, pending_code_enc) WHERE id_hash = $1
