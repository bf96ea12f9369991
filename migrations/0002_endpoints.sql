-- qbo-poller schema, version 2: per-URL delivery state (DESIGN §6 "410 stops delivery to that
-- URL").
--
-- One row per callback URL that has ever answered 410 Gone; a URL without a row is active.
-- The key is the URL exactly as `instances.callback_url` holds it (no normalisation), so every
-- instance pointing at the same URL shares the state.
--   gone:   a 410 marked it (in the transaction that recorded that attempt); notifications to it
--           are held without an attempt, at claim time, until `qbo-poller deliveries redeliver`.
--   active: redelivery reactivated it; the row stays as the URL's history (a handful of rows
--           at most, so nothing prunes it).
-- The table starts empty: a URL that answered 410 before this version is marked gone by its
-- next 410 (one more request, as before).
CREATE TABLE callback_endpoints (
    url                     text PRIMARY KEY,
    status                  text NOT NULL DEFAULT 'gone' CHECK (status IN ('active', 'gone')),
    gone_at                 timestamptz,     -- start of the current (or last) gone period
    reactivated_at          timestamptz,     -- the latest redelivery that reactivated it
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'gone' OR gone_at IS NOT NULL)
);

-- Held notifications by the URL they were held for: releasing a reactivated URL's held
-- notifications and the gone-endpoint summary of `deliveries list` read only these rows.
CREATE INDEX notifications_held_url_idx ON notifications (target_url) WHERE status = 'held';

COMMENT ON COLUMN notifications.target_url IS
    'The URL of the last attempt, or the gone URL the notification was held for without one.';
