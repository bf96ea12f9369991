-- qbo-poller schema, version 1: the whole pipeline of DESIGN §2.
--   instances → oauth_credentials → pair_cursors (watermarks, leases) → object_snapshots
--   → events (unique per object version) → notifications (the outbox / retry queue)
--   → delivery_attempts (append-only log)
-- Secrets (*_enc columns) hold either ciphertext ("fernet:" prefix, POLLER_SECRET_KEY set)
-- or the clear value ("plain:" prefix); the store's crypto module reads both.

CREATE TABLE instances (
    id                      bigserial PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    element_key             text NOT NULL DEFAULT 'quickbooks',
    realm_id                text NOT NULL,
    -- active: polled; paused: kept but not polled; needs_reconnect: OAuth grant lost
    -- (invalid_grant), waits for new providerData; disabled: events not enabled.
    status                  text NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'paused', 'needs_reconnect', 'disabled')),
    status_reason           text,
    client_id               text NOT NULL,
    client_secret_enc       text NOT NULL,
    redirect_uri            text,
    events_enabled          boolean NOT NULL DEFAULT false,
    vendor_type             text NOT NULL DEFAULT 'polling' CHECK (vendor_type IN ('polling', 'webhook')),
    callback_url            text,
    signature_key_enc       text,
    refresh_interval_s      double precision NOT NULL CHECK (refresh_interval_s > 0),
    resources               text[] NOT NULL,
    timezone                text NOT NULL DEFAULT 'UTC',
    initial_mode            text NOT NULL DEFAULT 'now' CHECK (initial_mode IN ('now', 'backfill')),
    deactivated_as_deleted  boolean NOT NULL DEFAULT false,
    tags                    jsonb NOT NULL DEFAULT '[]',
    configuration           jsonb NOT NULL DEFAULT '{}',   -- the body's configuration, minus secrets
    -- sha256 of the providerData last loaded: a reload uses providerData only when this changes.
    provider_fingerprint    text NOT NULL,
    -- bumped on every change, so running tasks notice edits without a restart.
    config_version          bigint NOT NULL DEFAULT 1,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX instances_realm_idx ON instances (realm_id);

-- One row per instance. Refreshes take `SELECT … FOR UPDATE` on it, so only one process
-- refreshes a realm's tokens at a time, and the rotated refresh token is committed before use.
CREATE TABLE oauth_credentials (
    instance_id             bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    realm_id                text NOT NULL,
    auth_code_enc           text,            -- pending single-use code; NULL once exchanged
    access_token_enc        text,
    access_expires_at       timestamptz,
    refresh_token_enc       text,
    refresh_expires_at      timestamptz,
    refresh_hard_expires_at timestamptz,
    refreshed_at            timestamptz,
    refresh_count           bigint NOT NULL DEFAULT 0,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- One row per instance-resource pair: the watermark (QBO's clock), the baseline of the
-- CREATED rule, the schedule, and a lease with a fencing token for multi-replica polling.
CREATE TABLE pair_cursors (
    instance_id             bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    resource                text NOT NULL,
    entity                  text NOT NULL,
    watermark               timestamptz,     -- QBO `time` of the last committed poll
    baseline                timestamptz,     -- QBO `time` of the pair's first answer
    initialized             boolean NOT NULL DEFAULT false,
    last_polled_at          timestamptz,
    next_due_at             timestamptz NOT NULL DEFAULT now(),
    last_reconciled_at      timestamptz,     -- full re-listing (no-CDC deletes, >29 days)
    lease_owner             text,
    lease_expires_at        timestamptz,
    lease_token             bigint NOT NULL DEFAULT 0,   -- fencing token, bumped on every takeover
    consecutive_errors      integer NOT NULL DEFAULT 0,
    last_error              text,
    polls                   bigint NOT NULL DEFAULT 0,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, resource)
);

CREATE INDEX pair_cursors_due_idx ON pair_cursors (next_due_at);

-- Last seen version of every object, per pair: what makes overlapping windows safe.
CREATE TABLE object_snapshots (
    instance_id             bigint NOT NULL,
    resource                text NOT NULL,
    object_id               text NOT NULL,
    sync_token              text,            -- NULL once deleted (tombstones carry none)
    last_updated            timestamptz NOT NULL,
    active                  boolean,         -- name lists: Active flag
    deleted                 boolean NOT NULL DEFAULT false,
    object                  json,            -- optional: last full object (field-level diffs)
    PRIMARY KEY (instance_id, resource, object_id),
    FOREIGN KEY (instance_id, resource) REFERENCES pair_cursors (instance_id, resource) ON DELETE CASCADE
);

-- The outbox. One row per notification (≤ POLLER_EVENTS_PER_NOTIFICATION events of one
-- instance and resource). `body` is built on first delivery and then fixed, so retries send
-- the same bytes and the same event_id.
CREATE TABLE notifications (
    id                      bigserial PRIMARY KEY,
    event_id                uuid NOT NULL UNIQUE,
    instance_id             bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    resource                text NOT NULL,
    event_count             integer NOT NULL,
    -- pending: waiting or retrying; held: its URL answered 410, waits for redelivery;
    -- delivered; dead: attempts exhausted (a dead letter).
    status                  text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'held', 'delivered', 'dead')),
    attempts                integer NOT NULL DEFAULT 0,
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    locked_by               text,
    locked_until            timestamptz,     -- claim lease: an expired claim comes back
    target_url              text,            -- the URL of the last attempt
    body                    bytea,
    last_status             integer,
    last_error              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    last_attempt_at         timestamptz,
    finished_at             timestamptz      -- delivered or dead: the retention clock
);

CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_instance_idx ON notifications (instance_id, status);
CREATE INDEX notifications_finished_idx ON notifications (finished_at) WHERE finished_at IS NOT NULL;

-- One row per change. Unique per object version (SyncToken, or 'deleted' for a tombstone),
-- so overlapping polls and concurrent replicas can never produce a duplicate event.
CREATE TABLE events (
    id                      bigserial PRIMARY KEY,
    instance_id             bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    resource                text NOT NULL,
    object_id               text NOT NULL,
    version                 text NOT NULL,
    event_type              text NOT NULL CHECK (event_type IN ('CREATED', 'UPDATED', 'DELETED')),
    occurred_at             timestamptz NOT NULL,   -- the object's LastUpdatedTime
    raw                     json NOT NULL,          -- the object exactly as QBO returned it
    notification_id         bigint REFERENCES notifications (id) ON DELETE SET NULL,
    position                integer NOT NULL DEFAULT 0,   -- order inside its notification
    created_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_object_version_key UNIQUE (instance_id, resource, object_id, version)
);

CREATE INDEX events_notification_idx ON events (notification_id, position);
CREATE INDEX events_instance_created_idx ON events (instance_id, created_at);

-- Append-only log of delivery attempts (kept out of the hot queue table).
CREATE TABLE delivery_attempts (
    id                      bigserial PRIMARY KEY,
    notification_id         bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt                 integer NOT NULL,
    url                     text NOT NULL,
    started_at              timestamptz NOT NULL,
    duration_ms             integer,
    status_code             integer,
    error                   text,
    response_body           text,
    outcome                 text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'held', 'dead'))
);

CREATE INDEX delivery_attempts_notification_idx ON delivery_attempts (notification_id);
