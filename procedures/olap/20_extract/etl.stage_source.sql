-- Function: etl.stage_source(p_loading_metadata_id bigint) RETURNS text
--     Unit of etl.extract_source. Copies the whole source into etl.stage_*
--     and records the source snapshot it read in etl.run. The deals are
--     sales_pipeline's and the archive's (public.sales_pipeline_archive:
--     closed deals the CRM archived, staged with their archived_at); a key in
--     both is the CRM's live deal. Everything is read
--     through one remote transaction (postgres_fdw opens one REPEATABLE READ
--     transaction per local transaction) and the snapshot is read first, so
--     the staged rows are exactly the committed state that snapshot
--     describes. Then clears the star schema (dwh.clear_star_schema) and
--     resets the run's later steps, which start over from this extract.
-- Returns: NULL (done in one transaction).
-- Tables: reads src.*; writes etl.stage_*, etl.run, etl.loading_metadata, dwh.*.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION etl.stage_source(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id bigint;
    v_snapshot text;
    v_taken_at timestamptz;
    v_rows bigint := 0;
    v_count bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'etl.stage_source');
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT s.snapshot, s.taken_at INTO v_snapshot, v_taken_at FROM src.source_snapshot AS s;
    TRUNCATE etl.stage_accounts, etl.stage_products, etl.stage_sales_agents, etl.stage_sales_pipeline,
             etl.stage_deleted, etl.change_window, etl.touched_group, etl.touched_product, etl.touched_account,
             etl.touched_account_day, etl.touched_open_day;
    INSERT INTO etl.stage_accounts SELECT * FROM src.accounts;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_rows := v_rows + v_count;
    INSERT INTO etl.stage_products SELECT * FROM src.products;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_rows := v_rows + v_count;
    INSERT INTO etl.stage_sales_agents SELECT * FROM src.sales_agents;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_rows := v_rows + v_count;
    INSERT INTO etl.stage_sales_pipeline SELECT p.*, NULL FROM src.sales_pipeline AS p;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_rows := v_rows + v_count;
    -- The archive's deals the CRM has not restored, read from the source in the
    -- same snapshot (not from the staged rows: on Citus a source table, local,
    -- cannot meet the distributed staging in one INSERT).
    INSERT INTO etl.stage_sales_pipeline
    SELECT a.* FROM src.sales_pipeline_archive AS a
     WHERE NOT EXISTS (SELECT 1 FROM src.sales_pipeline AS p WHERE p.opportunity_id = a.opportunity_id);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_rows := v_rows + v_count;
    ANALYZE etl.stage_accounts, etl.stage_products, etl.stage_sales_agents, etl.stage_sales_pipeline;
    UPDATE etl.run
       SET source_snapshot = v_snapshot::pg_snapshot, source_snapshot_at = v_taken_at
     WHERE run_id = v_run_id;

    PERFORM dwh.clear_star_schema();
    UPDATE etl.loading_metadata
       SET resume_after = NULL, rows_in = 0, rows_inserted = 0, rows_updated = 0,
           rows_deleted = 0, rows_rejected = 0, batches = 0,
           message = 'reset: the source was extracted again'
     WHERE run_id = v_run_id AND loading_metadata_id <> p_loading_metadata_id;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_rows, p_inserted => v_rows);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION etl.stage_source(bigint) IS
'Unit of etl.extract_source: copies the whole source into etl.stage_* through one remote snapshot, '
'records it in etl.run, clears the star schema and resets the run''s later steps.';
