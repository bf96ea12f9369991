-- qbo-poller schema, version 3: leases per instance (DESIGN §2, §8).
--
-- An instance's pairs are polled together, one coalesced QBO request per cycle, by the replica
-- holding the instance's lease; they never split between replicas (each replica would then
-- spend its own request per cycle). The lease carries the fencing token that every watermark
-- write checks: taking the lease from another replica, or after it lapsed, bumps it, so a
-- previous holder's late commit is refused. The holder renews the lease in the same statement
-- that writes a cycle's watermarks, up to its next cycle plus POLLER_PAIR_LEASE; another
-- replica takes the instance over once that has passed.
CREATE TABLE instance_leases (
    instance_id             bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    owner                   text,            -- replica id; NULL once released
    expires_at              timestamptz,
    token                   bigint NOT NULL, -- fencing token
    acquired_at             timestamptz NOT NULL DEFAULT now(),   -- this owner took it
    renewed_at              timestamptz NOT NULL DEFAULT now()
);

-- The per-pair leases are replaced by the above. Dropping their columns also makes a replica
-- of an older version, still running against this schema, fail its lease statements rather
-- than poll beside the new ones without a common fence.
ALTER TABLE pair_cursors
    DROP COLUMN lease_owner,
    DROP COLUMN lease_expires_at,
    DROP COLUMN lease_token;

-- No query reads pair_cursors by next_due_at; every cycle rewrites it for every pair, and the
-- index kept those updates from being HOT (heap-only). Leave room on each page for them.
DROP INDEX pair_cursors_due_idx;
ALTER TABLE pair_cursors SET (fillfactor = 80);
