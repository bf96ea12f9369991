-- The LISTEN connection (poller.store.listener).

-- name: ping
-- A half-open TCP connection never reports itself: the listener asks now and then.
SELECT 1
