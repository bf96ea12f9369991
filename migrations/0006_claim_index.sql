-- qbo-poller schema, version 6: the fair claim's index (issue 10, finding 1).
--
-- The claim takes, per callback URL, only its oldest few due notifications (a top-N through
-- LATERAL over the URL's instances). This index serves that read directly: pending rows of
-- one instance in due order, so a URL with a large backlog costs a few index entries per claim
-- instead of a scan of its whole due backlog.
CREATE INDEX notifications_pending_instance_due_idx
    ON notifications (instance_id, next_attempt_at, id) WHERE status = 'pending';
