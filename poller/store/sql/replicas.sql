-- Replica heartbeats (DESIGN §8): one row per running process, renewed every few seconds. An
-- instance lease is live while its owner's heartbeat_at is younger than POLLER_REPLICA_TIMEOUT.

-- name: beat
-- The replica is alive: its row, created by its first beat.
INSERT INTO replicas AS r (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()

-- name: forget
-- Graceful stop: the replica is gone (its leases were released one by one before this).
DELETE FROM replicas WHERE id = $1

-- name: prune
-- Every start is a new replica id, so rows of crashed processes pile up: drop those silent for
-- longer than $1 seconds (far past any timeout; a replica that beats again gets a new row).
DELETE FROM replicas WHERE heartbeat_at < now() - make_interval(secs => $1)
