-- Trigger function: cdc.purge_consumed() (row level, on cdc.consumer)
--     When a reader of the log reports its position, deletes the changes
--     that every reader still holding the purge back has applied
--     (transaction id below their smallest applied_xmin) and that are older
--     than the reporting reader's retention; forgets replaced-source markers
--     below that point too; and moves cdc.purge_horizon past the newest
--     transaction whose changes it deleted.
--     A reader holds the purge back while its last report is no older than
--     its own retention (the reporting reader always does): one that stopped
--     reporting for longer (a warehouse switched off, dropped, or the old
--     shared name b2b_sales_olap left behind) no longer keeps the log
--     growing; if the purge then passes its position, its next window is
--     refused by the warehouse (the horizon is past its start) until it is
--     reloaded.
-- Tables: reads cdc.consumer; deletes from cdc.change_log,
--     cdc.source_replaced; updates cdc.purge_horizon.
-- Security: SECURITY DEFINER (readers cannot delete changes themselves);
--     search_path pinned.
CREATE OR REPLACE FUNCTION cdc.purge_consumed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_bound xid8;
    v_gone xid8;
BEGIN
    SELECT min(c.applied_xmin) INTO v_bound
      FROM cdc.consumer AS c
     WHERE c.consumer_name = NEW.consumer_name OR c.reported_at >= v_now - c.retention;
    WITH gone AS (
        DELETE FROM cdc.change_log AS l
         WHERE l.txid < v_bound AND l.changed_at < v_now - NEW.retention
        RETURNING l.txid
    )
    SELECT max(g.txid) INTO v_gone FROM gone AS g;
    DELETE FROM cdc.source_replaced AS r
     WHERE r.txid < v_bound AND r.replaced_at < v_now - NEW.retention;
    IF v_gone IS NOT NULL THEN
        -- xid8 has no arithmetic: one past v_gone through numeric.
        UPDATE cdc.purge_horizon AS h
           SET horizon = (v_gone::text::numeric + 1)::text::xid8, purged_at = v_now
         WHERE h.horizon <= v_gone;
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION cdc.purge_consumed() IS
'Trigger function on cdc.consumer: deletes the changes that every reader still holding the purge back '
'(reported within its retention) applied and that are older than the reporting reader''s retention, old '
'replaced-source markers, and moves cdc.purge_horizon past what it deleted.';
