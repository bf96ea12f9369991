-- qbo-poller schema, version 5: replica heartbeats (DESIGN §8).
--
-- Every running process is a replica with its own row, heartbeated every few seconds. An
-- instance lease is live while its owner heartbeats (or renewed it, by taking it or committing
-- under it) within POLLER_REPLICA_TIMEOUT; after that any replica may take it over, bumping the
-- fencing token. A lease is therefore no longer tied to the poll interval: a cycle may last as
-- long as it needs while its replica is alive, and a dead replica's instances move on within the
-- timeout whatever their interval is.
CREATE TABLE replicas (
    id                      text PRIMARY KEY,  -- POLLER_REPLICA_ID: unique per process start
    started_at              timestamptz NOT NULL DEFAULT now(),
    heartbeat_at            timestamptz NOT NULL DEFAULT now()
);

-- Expiry is the owner's heartbeat now. Dropping the column also makes a replica of an older
-- version, still running against this schema, fail its lease statements rather than poll
-- beside the new ones under different rules.
ALTER TABLE instance_leases DROP COLUMN expires_at;
