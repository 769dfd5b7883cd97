-- Trigger function: cdc.purge_consumed() (row level, on cdc.consumer)
--     When a reader of the log reports its position, deletes the changes
--     that every reader has applied (transaction id below the smallest
--     applied_xmin) and that are older than the reporting reader's
--     retention; forgets replaced-source markers below that point too.
-- Security: SECURITY DEFINER (readers cannot delete changes themselves);
--     search_path pinned.
CREATE OR REPLACE FUNCTION cdc.purge_consumed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_horizon xid8 := (SELECT min(c.applied_xmin) FROM cdc.consumer AS c);
BEGIN
    DELETE FROM cdc.change_log AS l
     WHERE l.txid < v_horizon AND l.changed_at < clock_timestamp() - NEW.retention;
    DELETE FROM cdc.source_replaced AS r
     WHERE r.txid < v_horizon AND r.replaced_at < clock_timestamp() - NEW.retention;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION cdc.purge_consumed() IS
'Trigger function on cdc.consumer: deletes the changes every reader applied that are older than the '
'reporting reader''s retention, and old replaced-source markers.';
