-- Pair cursors (DESIGN §5, §8): leases with a fencing token, the watermark, the schedule.

-- name: pollable_instances
-- What the poller should run: active instances with events enabled, and their pairs.
SELECT i.id, i.name, i.realm_id, i.refresh_interval_s, i.initial_mode,
       i.deactivated_as_deleted, i.config_version,
       coalesce(array_agg(p.resource ORDER BY p.resource) FILTER (WHERE p.resource IS NOT NULL),
                '{}') AS resources
FROM instances i LEFT JOIN pair_cursors p ON p.instance_id = i.id
WHERE i.status = 'active' AND i.events_enabled
GROUP BY i.id
ORDER BY i.id

-- name: acquire_lease
-- Take the pair if it is free, ours, or its lease expired. Taking it from anyone else (or
-- after our own lease lapsed) bumps lease_token, which fences out the previous holder's
-- in-flight commit. Renewing a live lease of our own keeps the token.
UPDATE pair_cursors
SET lease_token = CASE WHEN lease_owner = $3 AND lease_expires_at > now() THEN lease_token
                       ELSE lease_token + 1 END,
    lease_owner = $3,
    lease_expires_at = now() + make_interval(secs => $4)
WHERE instance_id = $1 AND resource = $2
  AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at IS NULL
       OR lease_expires_at <= now())
RETURNING lease_token, watermark, baseline, initialized, last_reconciled_at,
          extract(epoch FROM now() - last_reconciled_at)::double precision AS reconciled_age_s,
          consecutive_errors, next_due_at

-- name: lease_holder
SELECT lease_owner, lease_expires_at,
       extract(epoch FROM lease_expires_at - now())::double precision AS expires_in_s
FROM pair_cursors WHERE instance_id = $1 AND resource = $2

-- name: release_lease
UPDATE pair_cursors SET lease_owner = NULL, lease_expires_at = NULL
WHERE instance_id = $1 AND resource = $2 AND lease_owner = $3 AND lease_token = $4

-- name: lock_pair
-- First statement of a poll's transaction: hold the pair row, and only if we still own it.
SELECT watermark FROM pair_cursors
WHERE instance_id = $1 AND resource = $2 AND lease_token = $3
FOR UPDATE

-- name: advance
-- The fencing check: 0 rows means another replica took the pair; the caller aborts.
UPDATE pair_cursors
SET watermark = greatest(watermark, $4),
    baseline = coalesce(baseline, $5),
    initialized = true,
    last_reconciled_at = CASE WHEN $6 THEN now() ELSE last_reconciled_at END,
    last_polled_at = now(),
    next_due_at = $7,
    polls = polls + 1,
    consecutive_errors = 0,
    last_error = NULL,
    updated_at = now()
WHERE instance_id = $1 AND resource = $2 AND lease_token = $3

-- name: record_error
UPDATE pair_cursors
SET consecutive_errors = consecutive_errors + 1, last_error = $4, next_due_at = $5,
    updated_at = now()
WHERE instance_id = $1 AND resource = $2 AND lease_token = $3
RETURNING consecutive_errors

-- name: reschedule
UPDATE pair_cursors SET next_due_at = $3, updated_at = now()
WHERE instance_id = $1 AND resource = $2

-- name: set_instance_status
-- An OAuth grant lost while polling (invalid_grant): the instance waits for new providerData.
UPDATE instances SET status = $2, status_reason = $3, config_version = config_version + 1,
    updated_at = now()
WHERE id = $1 AND status = 'active'

-- name: next_due_at
SELECT next_due_at FROM pair_cursors WHERE instance_id = $1 AND resource = $2

-- name: token_held_by
SELECT lease_token FROM pair_cursors
WHERE instance_id = $1 AND resource = $2 AND lease_owner = $3
