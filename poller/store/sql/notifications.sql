-- The outbox as a retry queue (DESIGN §2, §6). A claim is a lease: locked_by + locked_until.
-- Outcomes are fenced by (locked_by, attempts): a process whose lease expired and was taken
-- over cannot overwrite the newer owner's result.

-- name: claim
-- Fair between callback URLs: every due notification is ranked within its URL (oldest first),
-- a URL gets at most its room ($5/$6: this dispatcher's free permits for the URLs it has in
-- flight or paused; $4 for any other URL), and the batch takes rank 1 of every URL before
-- rank 2 of any. So one URL's backlog or hang can fill at most its own share of the slots, and
-- everything claimed can start at once. The ranking reads without locks; the lock then skips
-- rows another dispatcher is claiming and the LIMIT counts only the rows it got.
-- A due notification whose instance's callback URL is gone (answered 410, callback_endpoints)
-- is held right here, without an attempt, and returned with held = true (no room needed: no
-- request is sent). FOR SHARE on those endpoint rows waits for a redelivery reactivating one
-- of them and then reads its committed status, so nothing is held for an endpoint that has
-- just come back.
WITH RECURSIVE waiting AS (
    -- The instances with pending notifications, one probe of the pending rows'
    -- (instance_id, next_attempt_at, id) index each, skipping from one instance to the next:
    -- an empty outbox costs one probe, and a backlog costs what its own instances cost, not
    -- what the fleet's thousands of idle instances would.
    (SELECT n.instance_id FROM notifications n WHERE n.status = 'pending'
     ORDER BY n.instance_id LIMIT 1)
    UNION ALL
    SELECT (SELECT n.instance_id FROM notifications n
            WHERE n.status = 'pending' AND n.instance_id > w.instance_id
            ORDER BY n.instance_id LIMIT 1)
    FROM waiting w WHERE w.instance_id IS NOT NULL
), rooms AS (
    SELECT url, room FROM unnest($5::text[], $6::integer[]) AS r(url, room)
), targets AS (
    -- Every callback URL with something pending, those instances and its room.
    SELECT i.callback_url AS url, array_agg(i.id) AS instance_ids,
           CASE WHEN bool_or(e.url IS NOT NULL) THEN $1 ELSE COALESCE(min(r.room), $4) END
               AS room
    FROM waiting w JOIN instances i ON i.id = w.instance_id
    LEFT JOIN rooms r ON r.url = i.callback_url
    LEFT JOIN callback_endpoints e ON e.url = i.callback_url AND e.status = 'gone'
    GROUP BY i.callback_url
), due AS (
    -- Per URL only its oldest `room` due rows (a top-N per URL, never a sort of the backlog).
    -- A URL of a few instances (the usual: one tenant, one receiver) reads each instance's
    -- oldest from the (instance_id, next_attempt_at, id) index: at most `room` rows each,
    -- whatever the backlog. `instance_id = ANY(...)` cannot use that index's order, and
    -- walked the whole due index once per URL (4 ms per URL at 4,000 pending). A URL shared by
    -- many instances keeps that walk: its oldest rows come first there.
    SELECT d.id, d.next_attempt_at, t.room,
           row_number() OVER (PARTITION BY t.url ORDER BY d.next_attempt_at, d.id) AS rank
    FROM targets t CROSS JOIN LATERAL (
        SELECT c.id, c.next_attempt_at
        FROM unnest(t.instance_ids) AS u(instance_id) CROSS JOIN LATERAL (
            SELECT n.id, n.next_attempt_at FROM notifications n
            WHERE n.instance_id = u.instance_id
              AND n.status = 'pending' AND n.next_attempt_at <= now()
              AND (n.locked_until IS NULL OR n.locked_until < now())
            ORDER BY n.next_attempt_at, n.id
            LIMIT t.room
        ) c
        WHERE cardinality(t.instance_ids) <= 16
        UNION ALL
        (
            SELECT n.id, n.next_attempt_at FROM notifications n
            WHERE cardinality(t.instance_ids) > 16
              AND n.instance_id = ANY(t.instance_ids)
              AND n.status = 'pending' AND n.next_attempt_at <= now()
              AND (n.locked_until IS NULL OR n.locked_until < now())
            ORDER BY n.next_attempt_at, n.id
            LIMIT t.room
        )
    ) d
    WHERE t.room > 0
), ranked AS MATERIALIZED (
    SELECT id FROM due WHERE rank <= room ORDER BY rank, next_attempt_at, id
), picked AS MATERIALIZED (
    -- Locked in rank order, one primary-key lookup per row, until $1 are locked. Whatever the
    -- planner believes: during a burst the table's statistics are seconds stale (it grew from
    -- nothing since autovacuum last analysed it), and a join of `due` with the table was
    -- planned as a nested loop rescanning `due` for every pending row (90 ms and more per
    -- claim: the dispatcher's bottleneck). A row another dispatcher holds is skipped, and the
    -- LIMIT counts only the rows this one got.
    SELECT n.id, n.instance_id FROM ranked CROSS JOIN LATERAL (
        SELECT n.id, n.instance_id FROM notifications n
        WHERE n.id = ranked.id AND n.status = 'pending'
          AND (n.locked_until IS NULL OR n.locked_until < now())
        FOR UPDATE SKIP LOCKED
    ) n
    LIMIT $1
), gone AS MATERIALIZED (
    SELECT e.url FROM callback_endpoints e
    WHERE e.status = 'gone'
      AND e.url IN (SELECT i.callback_url FROM picked JOIN instances i
                    ON i.id = picked.instance_id)
    FOR SHARE
)
UPDATE notifications n SET
    status = CASE WHEN g.url IS NULL THEN 'pending' ELSE 'held' END,
    locked_by = CASE WHEN g.url IS NULL THEN $2 END,
    locked_until = CASE WHEN g.url IS NULL THEN now() + make_interval(secs => $3) END,
    target_url = COALESCE(g.url, n.target_url)
FROM picked JOIN instances i ON i.id = picked.instance_id
    LEFT JOIN gone g ON g.url = i.callback_url
WHERE n.id = picked.id
RETURNING n.id, n.event_id, n.instance_id, n.resource, n.attempts, n.body, n.created_at,
          i.name AS instance_name, i.realm_id, i.tags, i.timezone, i.callback_url,
          i.signature_key_enc, g.url IS NOT NULL AS held

-- name: events_of
SELECT notification_id, event_type, object_id, occurred_at, raw::text AS raw,
       changes::text AS changes
FROM events
WHERE notification_id = ANY($1::bigint[])
ORDER BY notification_id, position, id

-- name: set_bodies
-- The body is built once, before the first attempt, and never changes after.
UPDATE notifications n SET body = v.body
FROM unnest($1::bigint[], $2::bytea[]) AS v(id, body)
WHERE n.id = v.id AND n.body IS NULL AND n.locked_by = $3

-- name: record_attempt
-- $4: the new status (pending = retry later, delivered, held, dead); $5: delay in seconds for
-- a retry; $12: the attempt log's outcome. One statement: the row and its log line, or neither.
WITH n AS (
    UPDATE notifications SET
        status = $4,
        attempts = attempts + 1,
        next_attempt_at = CASE WHEN $4 = 'pending' THEN now() + make_interval(secs => $5)
                               ELSE next_attempt_at END,
        finished_at = CASE WHEN $4 IN ('delivered', 'dead') THEN now() END,
        last_attempt_at = $6, target_url = $7, last_status = $8, last_error = $9,
        locked_by = NULL, locked_until = NULL
    WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'pending'
    RETURNING id, attempts
)
INSERT INTO delivery_attempts (notification_id, attempt, url, started_at, duration_ms,
                               status_code, error, response_body, outcome)
SELECT id, attempts, $7, $6, $10, $8, $9, $11, $12 FROM n
RETURNING notification_id

-- name: record_attempts
-- The same as record_attempt for many claims at once (group commit): one statement, one
-- transaction, one WAL flush for every outcome that finished while the previous write ran.
WITH v AS (
    SELECT * FROM unnest($2::bigint[], $3::integer[], $4::text[], $5::float8[],
                         $6::timestamptz[], $7::text[], $8::integer[], $9::text[],
                         $10::integer[], $11::text[], $12::text[])
        AS v(id, attempts, status, delay_s, started_at, url, status_code, error, duration_ms,
             response_body, outcome)
), n AS (
    UPDATE notifications t SET
        status = v.status,
        attempts = t.attempts + 1,
        next_attempt_at = CASE WHEN v.status = 'pending'
                               THEN now() + make_interval(secs => v.delay_s)
                               ELSE t.next_attempt_at END,
        finished_at = CASE WHEN v.status IN ('delivered', 'dead') THEN now() END,
        last_attempt_at = v.started_at, target_url = v.url, last_status = v.status_code,
        last_error = v.error, locked_by = NULL, locked_until = NULL
    FROM v
    WHERE t.id = v.id AND t.locked_by = $1 AND t.attempts = v.attempts AND t.status = 'pending'
    RETURNING t.id, t.attempts, v.url, v.started_at, v.duration_ms, v.status_code, v.error,
              v.response_body, v.outcome
)
INSERT INTO delivery_attempts (notification_id, attempt, url, started_at, duration_ms,
                               status_code, error, response_body, outcome)
SELECT id, attempts, url, started_at, duration_ms, status_code, error, response_body, outcome
FROM n
RETURNING notification_id

-- name: mark_gone
-- 410 Gone: the URL is gone until redelivered (callback_endpoints). Returns true when this
-- answer started the gone period (false: it was gone already).
INSERT INTO callback_endpoints AS e (url, status, gone_at, updated_at)
VALUES ($1, 'gone', now(), now())
ON CONFLICT (url) DO UPDATE SET
    status = 'gone',
    gone_at = CASE WHEN e.status = 'gone' THEN e.gone_at ELSE now() END,
    updated_at = now()
RETURNING gone_at = now() AS newly_gone

-- name: hold_url
-- …and every other waiting notification to that URL is held with it. Rows with a live claim
-- are left to their owner (its own attempt meets the 410, or the next claim holds them);
-- SKIP LOCKED: rows another transaction is claiming are theirs too, and this never waits, so
-- two dispatchers recording 410s for the same URL cannot deadlock here.
WITH waiting AS (
    SELECT n.id FROM notifications n JOIN instances i ON i.id = n.instance_id
    WHERE i.callback_url = $1 AND n.status = 'pending'
      AND (n.locked_until IS NULL OR n.locked_until < now())
    FOR UPDATE OF n SKIP LOCKED
)
UPDATE notifications n SET status = 'held', target_url = $1, locked_by = NULL,
    locked_until = NULL
FROM waiting WHERE n.id = waiting.id

-- name: renew
-- SKIP LOCKED: a row being written right now (its outcome, its body) is skipped rather than
-- waited for. Waiting could deadlock against the outcome batch, which locks the same rows in
-- another order; the outcome ends the claim anyway, and a body write is a moment.
WITH mine AS (
    SELECT id FROM notifications
    WHERE id = ANY($1::bigint[]) AND locked_by = $2 AND status = 'pending'
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET locked_until = now() + make_interval(secs => $3)
FROM mine WHERE n.id = mine.id

-- name: release
-- Shutdown: give unfinished claims back at once instead of waiting for the lease to expire.
UPDATE notifications SET locked_by = NULL, locked_until = NULL
WHERE id = ANY($1::bigint[]) AND locked_by = $2 AND status = 'pending'

-- name: defer
-- Claims whose URL is paused by its breaker: back to the queue, due when the pause ends.
-- attempts stays as it was: no request was sent.
UPDATE notifications SET next_attempt_at = now() + make_interval(secs => $3),
    locked_by = NULL, locked_until = NULL
WHERE id = ANY($1::bigint[]) AND locked_by = $2 AND status = 'pending'

-- name: defer_url
-- A URL's breaker opened: what waits for it is not due before the pause ends, for every
-- dispatcher (attempts unchanged). Rows with a live claim are left to their owner; SKIP LOCKED
-- as in hold_url, so this never waits on a claim or an outcome batch.
WITH waiting AS (
    SELECT n.id FROM notifications n JOIN instances i ON i.id = n.instance_id
    WHERE i.callback_url = $1 AND n.status = 'pending'
      AND (n.locked_until IS NULL OR n.locked_until < now())
    FOR UPDATE OF n SKIP LOCKED
)
UPDATE notifications n
SET next_attempt_at = greatest(n.next_attempt_at, now() + make_interval(secs => $2))
FROM waiting WHERE n.id = waiting.id

-- name: redeliver_one
-- Redelivery: back to pending with attempts 0, to the instance's callback URL of the moment
-- (the claim reads it). Each returns the instances concerned, whose gone URLs reactivate next.
UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = now(),
    finished_at = NULL, locked_by = NULL, locked_until = NULL
WHERE id = $1 AND status IN ('held', 'dead', 'delivered')
RETURNING instance_id

-- name: redeliver_instance
WITH r AS (
    UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = now(),
        finished_at = NULL, locked_by = NULL, locked_until = NULL
    WHERE instance_id = $1 AND status IN ('held', 'dead')
    RETURNING id
)
SELECT count(*) FROM r

-- name: redeliver_all_dead
WITH r AS (
    UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = now(),
        finished_at = NULL, locked_by = NULL, locked_until = NULL
    WHERE status = 'dead'
    RETURNING instance_id
)
SELECT instance_id, count(*) AS n FROM r GROUP BY instance_id

-- name: reactivate
-- The gone callback URLs of these instances become active again. Locked in URL order (two
-- redeliveries never deadlock); a claim holding for one of them waits (FOR SHARE) and then
-- sees it active. Runs before release_held, whose snapshot then includes whatever such a
-- claim held.
WITH target AS (
    SELECT e.url FROM callback_endpoints e
    WHERE e.status = 'gone'
      AND e.url IN (SELECT callback_url FROM instances WHERE id = ANY($1::bigint[]))
    ORDER BY e.url
    FOR UPDATE
)
UPDATE callback_endpoints e SET status = 'active', reactivated_at = now(), updated_at = now()
FROM target WHERE e.url = target.url
RETURNING e.url

-- name: release_held
-- Every notification held for a reactivated URL: held for it (target_url), or held while its
-- instance points at it now. Back to pending, attempts 0; each goes to its instance's URL of
-- the moment.
UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = now(),
    finished_at = NULL, locked_by = NULL, locked_until = NULL
WHERE status = 'held'
  AND (target_url = ANY($1::text[])
       OR instance_id IN (SELECT id FROM instances WHERE callback_url = ANY($1::text[])))

-- name: wake
SELECT pg_notify('qbo_poller_outbox', '')

-- name: prune
-- Delivered notifications past the retention go, with their events (the snapshots, not the
-- events, keep later polls from re-emitting them). Dead letters are never pruned: they wait
-- for `deliveries redeliver`, or nothing would be "never silently dropped".
-- Small batches keep locks and WAL bursts short; SKIP LOCKED lets replicas prune side by side.
WITH doomed AS (
    SELECT id FROM notifications
    WHERE finished_at < now() - make_interval(secs => $1) AND status = 'delivered'
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), events_gone AS (
    DELETE FROM events WHERE notification_id IN (SELECT id FROM doomed)
)
DELETE FROM notifications WHERE id IN (SELECT id FROM doomed)

-- name: counts
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'held') AS held,
       count(*) FILTER (WHERE status = 'dead') AS dead
FROM notifications WHERE status IN ('pending', 'held', 'dead')

-- name: instance_id
SELECT id FROM instances WHERE name = $1

-- name: list
SELECT n.id, i.name AS instance, n.resource, n.event_count, n.status, n.attempts,
       n.next_attempt_at, n.last_status, n.last_error, n.created_at, n.finished_at,
       n.target_url, i.callback_url
FROM notifications n JOIN instances i ON i.id = n.instance_id
WHERE ($1::boolean IS NOT TRUE OR n.status = 'dead')
  AND ($2::bigint IS NULL OR n.instance_id = $2)
ORDER BY n.id DESC
LIMIT $3

-- name: gone_endpoints
-- Gone URLs that matter: some instance points at one, or notifications are held for it.
-- $1: only those of this instance (its URL, or held notifications of it).
WITH g AS (
    SELECT e.url, e.gone_at,
           ARRAY(SELECT name FROM instances WHERE callback_url = e.url ORDER BY name)
               AS instances,
           (SELECT count(*) FROM notifications n
            WHERE n.status = 'held'
              AND (n.target_url = e.url
                   OR n.instance_id IN (SELECT id FROM instances WHERE callback_url = e.url)))
               AS held
    FROM callback_endpoints e
    WHERE e.status = 'gone'
      AND ($1::bigint IS NULL
           OR e.url = (SELECT callback_url FROM instances WHERE id = $1)
           OR EXISTS (SELECT 1 FROM notifications n
                      WHERE n.instance_id = $1 AND n.status = 'held' AND n.target_url = e.url))
)
SELECT url, gone_at, instances, held FROM g
WHERE cardinality(instances) > 0 OR held > 0
ORDER BY gone_at, url

-- name: ping
SELECT 1
