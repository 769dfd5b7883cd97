-- Function: etl.report_applied_position(p_loading_metadata_id bigint) RETURNS text
--     Unit of etl.purge_change_log: writes this warehouse's row of the
--     source's cdc.consumer, under etl.consumer_name() (its database's name
--     unless configured): the xmin of the snapshot its next window starts
--     from, the retention from etl.config, and the time. That snapshot is
--     the last applied one, or, in an initial load, the load's own snapshot
--     (the step runs right after the extract: from then on the source holds
--     back every change the first incremental window will need). The row
--     says where this warehouse is, even when that is behind what it said
--     before (a restored warehouse): lower only holds back more. Writing it
--     makes the source purge (cdc.purge_consumed).
-- Returns: NULL (done).
-- Tables: reads etl.run, etl.config; writes src.cdc_consumer.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION etl.report_applied_position(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text := etl.consumer_name();
    v_retention interval := etl.config_value('change_retention')::interval;
    v_run_id bigint;
    v_xmin xid8;
    v_reported bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'etl.report_applied_position');
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT pg_snapshot_xmin(r.source_snapshot) INTO v_xmin
      FROM etl.run AS r
     WHERE r.source_snapshot IS NOT NULL
       AND (r.window_applied OR (r.run_id = v_run_id AND r.pipeline = 'initial_load'))
     ORDER BY r.run_id DESC LIMIT 1;
    IF v_xmin IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE src.cdc_consumer AS c
       SET applied_xmin = v_xmin, retention = v_retention, reported_at = clock_timestamp()
     WHERE c.consumer_name = v_name;
    GET DIAGNOSTICS v_reported = ROW_COUNT;
    IF v_reported = 0 THEN
        INSERT INTO src.cdc_consumer (consumer_name, applied_xmin, retention, reported_at)
        VALUES (v_name, v_xmin, v_retention, clock_timestamp());
        v_reported := 1;
    END IF;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_updated => v_reported);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION etl.report_applied_position(bigint) IS
'Unit of etl.purge_change_log: writes this warehouse''s row of the source''s cdc.consumer under '
'etl.consumer_name() (xmin of the snapshot its next window starts from, retention, time).';
