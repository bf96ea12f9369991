-- qbo-poller schema, version 4: the Open Connectors HTTP API (DESIGN §9).
--
-- API users are managed from the terminal (`qbo-poller users ...`). A user secret is 32 random
-- bytes shown once; only its SHA-256 is stored (a fast hash is enough for a 256-bit random
-- secret: there is nothing to guess, and it lets every request look the user up by index).
CREATE TABLE api_users (
    id                      bigserial PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    secret_hash             text NOT NULL UNIQUE,   -- hex SHA-256 of the secret
    admin                   boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    rotated_at              timestamptz
);

-- The instance's owner: NULL for instances loaded from POLLER_INSTANCES_FILE or
-- `instances add` (admins only). Removing a user leaves its instances to the admins.
-- The instance (Element) token: sealed like the other secrets (token_enc, shown to its owner),
-- plus its SHA-256 (token_hash) so an `Element <token>` header finds the instance by index
-- (sealed values carry a random IV and cannot be searched).
ALTER TABLE instances
    ADD COLUMN owner_user_id bigint REFERENCES api_users (id) ON DELETE SET NULL,
    ADD COLUMN token_enc text,
    ADD COLUMN token_hash text UNIQUE;

CREATE INDEX instances_owner_idx ON instances (owner_user_id, id);
