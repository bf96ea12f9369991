-- Pair cursors and instance leases (DESIGN §5, §8): the watermarks, the schedule, and the lease
-- with its fencing token under which one replica polls all the pairs of an instance.

-- name: pollable_instances
-- What the poller should run: active instances with events enabled, and their pairs.
SELECT i.id, i.name, i.realm_id, i.refresh_interval_s, i.initial_mode,
       i.deactivated_as_deleted, i.config_version, i.vendor_type, i.changes,
       coalesce(array_agg(p.resource ORDER BY p.resource) FILTER (WHERE p.resource IS NOT NULL),
                '{}') AS resources
FROM instances i LEFT JOIN pair_cursors p ON p.instance_id = i.id
WHERE i.status = 'active' AND i.events_enabled
GROUP BY i.id
ORDER BY i.id

-- name: acquire
-- Take the instance's lease if it is free, ours, or its owner is dead, and read every pair's
-- cursor, in one statement. A lease is live while its owner's heartbeat (replicas) or its own
-- renewed_at (set when taken and at every commit) is younger than the timeout $3. Taking it from
-- anyone else (or after our own lease lapsed) bumps the token, which fences out the previous
-- holder's in-flight commit; renewing a live lease of our own keeps it. The WHERE of ON CONFLICT
-- sees the row as another taker may just have committed it (its fresh renewed_at): of replicas
-- racing for a dead lease, one wins. lease_token is NULL when another replica holds a live
-- lease; held_for_s then says how long it stays live unless its owner heartbeats again, and
-- due_in_s when the instance's first pair is due (the holder's schedule, as stored).
WITH taken AS (
    INSERT INTO instance_leases AS l (instance_id, owner, token)
    VALUES ($1, $2, 1)
    ON CONFLICT (instance_id) DO UPDATE
    SET token = CASE WHEN l.owner = $2 AND greatest(
                         l.renewed_at, (SELECT heartbeat_at FROM replicas WHERE id = l.owner)
                     ) > now() - make_interval(secs => $3)
                     THEN l.token ELSE l.token + 1 END,
        acquired_at = CASE WHEN l.owner = $2 THEN l.acquired_at ELSE now() END,
        owner = EXCLUDED.owner,
        renewed_at = now()
    WHERE l.owner IS NULL OR l.owner = $2
       OR greatest(l.renewed_at, (SELECT heartbeat_at FROM replicas WHERE id = l.owner))
          <= now() - make_interval(secs => $3)
    RETURNING l.token
),
holder AS (
    SELECT l.owner,
           extract(epoch FROM greatest(l.renewed_at, r.heartbeat_at)
                              + make_interval(secs => $3) - now())::double precision AS held_for_s
    FROM instance_leases l LEFT JOIN replicas r ON r.id = l.owner
    WHERE l.instance_id = $1
)
SELECT (SELECT token FROM taken) AS lease_token,
       (SELECT owner FROM holder) AS holder,
       (SELECT held_for_s FROM holder) AS held_for_s,
       (SELECT extract(epoch FROM min(next_due_at) - now())::double precision
        FROM pair_cursors WHERE instance_id = $1) AS due_in_s,
       p.resource, p.watermark, p.baseline, p.initialized,
       extract(epoch FROM now() - p.last_reconciled_at)::double precision AS reconciled_age_s,
       p.consecutive_errors, p.next_due_at
FROM (VALUES (1)) AS one (x)
LEFT JOIN pair_cursors p ON p.instance_id = $1

-- name: settle
-- The end of a cycle, fenced by the lease token: every polled pair's cursor (a success advances
-- the watermark and resets the error count, a failure counts an error and pushes its schedule
-- back) and the lease's renewed_at, in one statement. No rows: the token is no longer current
-- (another replica took the instance, or it was released), and the caller's transaction aborts.
-- Only the pairs' names come back: the caller, holding the lease, knows what it wrote
-- (`cursors.written`); decoding 22 rows of timestamps was half of an idle cycle's statement.
-- Holding the lease row from here to COMMIT keeps a takeover from slipping in before it.
WITH lease AS (
    UPDATE instance_leases
    SET renewed_at = now()
    WHERE instance_id = $1 AND owner = $2 AND token = $3
    RETURNING token
)
UPDATE pair_cursors AS p
SET watermark = CASE WHEN r.ok THEN greatest(p.watermark, r.watermark) ELSE p.watermark END,
    baseline = CASE WHEN r.ok THEN coalesce(p.baseline, r.baseline) ELSE p.baseline END,
    initialized = p.initialized OR r.ok,
    last_reconciled_at = CASE WHEN r.ok AND r.reconciled THEN now() ELSE p.last_reconciled_at END,
    last_polled_at = CASE WHEN r.ok THEN now() ELSE p.last_polled_at END,
    next_due_at = r.next_due_at,
    polls = p.polls + CASE WHEN r.ok THEN 1 ELSE 0 END,
    consecutive_errors = CASE WHEN r.ok THEN 0 ELSE p.consecutive_errors + 1 END,
    last_error = r.error,
    updated_at = now()
FROM lease,
     unnest($4::text[], $5::boolean[], $6::timestamptz[], $7::timestamptz[], $8::boolean[],
            $9::timestamptz[], $10::text[])
     AS r (resource, ok, watermark, baseline, reconciled, next_due_at, error)
WHERE p.instance_id = $1 AND p.resource = r.resource
RETURNING p.resource

-- name: release
-- Graceful stop: free the instance so another replica need not wait for the timeout. The token
-- stays; with owner NULL a late commit of ours would be refused too. (A replica runs one
-- cycle loop per instance at a time, so its owner id is enough.)
UPDATE instance_leases SET owner = NULL, renewed_at = now()
WHERE instance_id = $1 AND owner = $2

-- name: schedule
-- Where every pair of an instance stands, for resuming its schedule after a restart.
SELECT resource, next_due_at FROM pair_cursors WHERE instance_id = $1

-- name: pollable_instances_by_id
-- The same, for the instances $1 only (those a notification of qbo_poller_instances named):
-- an instance not returned is gone, paused or switched off.
SELECT i.id, i.name, i.realm_id, i.refresh_interval_s, i.initial_mode,
       i.deactivated_as_deleted, i.config_version, i.vendor_type, i.changes,
       coalesce(array_agg(p.resource ORDER BY p.resource) FILTER (WHERE p.resource IS NOT NULL),
                '{}') AS resources
FROM instances i LEFT JOIN pair_cursors p ON p.instance_id = i.id
WHERE i.id = ANY($1::bigint[]) AND i.status = 'active' AND i.events_enabled
GROUP BY i.id
ORDER BY i.id
