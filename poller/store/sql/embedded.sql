-- The embedded server's own database (poller.store.embedded), created on first start.

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = $1;

-- name: create_database
-- Identifiers cannot be parameters; the name is the module's constant, never input.
CREATE DATABASE qbo_poller;
