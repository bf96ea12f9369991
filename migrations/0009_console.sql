-- qbo-poller schema, version 9: the console's sessions (DESIGN §10).
--
-- A session id is 32 random bytes kept only in the browser's cookie; the row holds its
-- SHA-256 (id_hash), so a copy of the database opens no session. user_secret_hash is the
-- user's secret hash at sign-in: `users rotate` changes api_users.secret_hash and every
-- session of the user stops matching at once (the lookup joins on it); removing the user
-- deletes its sessions. Idle expiry: last_seen_at, checked by the lookup and pruned at
-- sign-in.
--
-- The OAuth flow of "Connect to QuickBooks" is bound to the session: oauth_state_hash is the
-- SHA-256 of the `state` sent to Intuit, oauth_purpose what the consent is for ('new' or
-- 'reconnect:<instance id>'), and the code and realm that came back wait here (the code
-- sealed like every other secret) until the instance form is submitted.
CREATE TABLE console_sessions (
    id_hash                 text PRIMARY KEY,
    user_id                 bigint NOT NULL REFERENCES api_users (id) ON DELETE CASCADE,
    user_secret_hash        text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    last_seen_at            timestamptz NOT NULL DEFAULT now(),
    oauth_state_hash        text,
    oauth_purpose           text,
    pending_code_enc        text,
    pending_realm_id        text
);

CREATE INDEX console_sessions_user_idx ON console_sessions (user_id);
CREATE INDEX console_sessions_seen_idx ON console_sessions (last_seen_at);
