-- qbo-poller schema, version 8: Intuit webhooks (DESIGN §11).
--
-- An instance may name the verifier token of its own Intuit app (event.webhook.verifier.token),
-- stored sealed like the signature key ("fernet:" or "plain:" prefix).
ALTER TABLE instances ADD COLUMN webhook_verifier_enc text;

-- Every notification the receiver accepted (signature checked), one row per entity change,
-- committed before the 200. The dedupe key makes Intuit's retries and duplicates one row:
-- CloudEvents `id`, or realm + entity + id + operation + time for the legacy format.
CREATE TABLE webhook_notifications (
    id                      bigserial PRIMARY KEY,
    dedupe_key              text NOT NULL UNIQUE,
    format                  text NOT NULL CHECK (format IN ('legacy', 'cloudevents')),
    realm_id                text NOT NULL,
    entity                  text NOT NULL,          -- as Intuit named it (e.g. Invoice)
    object_id               text NOT NULL,
    operation               text NOT NULL,          -- Create, Update, Delete, Merge, Void, ...
    occurred_at             timestamptz,            -- lastUpdated / time (NULL: unreadable)
    received_at             timestamptz NOT NULL DEFAULT now(),
    notification            json NOT NULL           -- the entity change (or event) as sent
);

CREATE INDEX webhook_notifications_received_idx ON webhook_notifications (received_at);
CREATE INDEX webhook_notifications_realm_idx ON webhook_notifications (realm_id, received_at);

-- Signed bodies that could not be read as either format: kept raw for inspection (they were
-- still answered 200, or Intuit would re-send the whole batch).
CREATE TABLE webhook_rejects (
    id                      bigserial PRIMARY KEY,
    received_at             timestamptz NOT NULL DEFAULT now(),
    content_type            text,
    reason                  text NOT NULL,
    body                    bytea NOT NULL
);
