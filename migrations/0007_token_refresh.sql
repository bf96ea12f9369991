-- qbo-poller schema, version 7: the refresh lease on OAuth credentials (issue 10, finding 4).
--
-- One process at a time may spend an instance's refresh token (Intuit rotates it; a second use
-- of the old value answers invalid_grant). That used to be the credentials row lock, held in a
-- pooled connection for the whole HTTP call to Intuit. The lease replaces it: taken in a short
-- transaction, kept while the token request runs with no connection held, released by the
-- short transaction that saves the new tokens. A lease outlives a PostgreSQL restart, and one
-- whose holder died runs out at `refresh_lease_until`.
ALTER TABLE oauth_credentials
    ADD COLUMN refresh_holder      text,         -- the process (TokenManager) refreshing; NULL: none
    ADD COLUMN refresh_lease_until timestamptz;  -- the lease runs out then (database clock)
