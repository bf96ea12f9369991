-- name: lock
SELECT pg_advisory_xact_lock(7163829101)

-- name: create_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: current_version
SELECT max(version) FROM schema_migrations

-- name: record
INSERT INTO schema_migrations (version, name) VALUES ($1, $2)
