-- qbo-poller schema: instance changes are announced (issue 17).
--
-- Every replica's poller used to re-read all active instances with all their pairs every 2 s
-- to notice edits (122 ms of PostgreSQL per scan at 4,500 instances, whatever changed). Now
-- any change that can start, stop or restart an instance's polling NOTIFYs
-- qbo_poller_instances with the instance's id, at COMMIT, from whichever path made it (the
-- instances file, the API, the console, the CLI, a hand-written UPDATE): its row inserted or
-- deleted, its config_version, status, events switch or field-changes option (0010) changed, a
-- pair added or dropped.
-- Pollers LISTEN and re-read only the named instances; a full scan remains for start-up and
-- after the LISTEN connection was lost (notifications sent meanwhile are gone).
-- Identical notifications of one transaction are folded into one by PostgreSQL.
CREATE FUNCTION qbo_poller_instance_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'instances' THEN
        PERFORM pg_notify('qbo_poller_instances',
                          (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
    ELSE
        PERFORM pg_notify('qbo_poller_instances',
                          (CASE WHEN TG_OP = 'DELETE' THEN OLD.instance_id
                                ELSE NEW.instance_id END)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_added_or_removed
    AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION qbo_poller_instance_changed();

CREATE TRIGGER instances_changed
    AFTER UPDATE ON instances
    FOR EACH ROW
    WHEN (OLD.config_version IS DISTINCT FROM NEW.config_version
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.events_enabled IS DISTINCT FROM NEW.events_enabled
          OR OLD.changes IS DISTINCT FROM NEW.changes)
    EXECUTE FUNCTION qbo_poller_instance_changed();

CREATE TRIGGER pairs_added_or_removed
    AFTER INSERT OR DELETE ON pair_cursors
    FOR EACH ROW EXECUTE FUNCTION qbo_poller_instance_changed();
