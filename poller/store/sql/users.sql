-- API users (poller/store/users.py). Only hashes of secrets are stored.

-- name: add
INSERT INTO api_users (name, secret_hash, admin) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING
RETURNING id

-- name: list
SELECT u.id, u.name, u.admin, u.created_at, u.rotated_at,
       (SELECT count(*) FROM instances i WHERE i.owner_user_id = u.id) AS instances
FROM api_users u ORDER BY u.name

-- name: rotate
UPDATE api_users SET secret_hash = $2, rotated_at = now() WHERE name = $1 RETURNING id

-- name: remove
DELETE FROM api_users WHERE name = $1 RETURNING id

-- name: by_hash
SELECT id, name, admin, secret_hash FROM api_users WHERE secret_hash = $1
