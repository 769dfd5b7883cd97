-- Function: dwh.rebuild_monthly_aggregate(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_fact_sales_monthly_aggregate, in one transaction, so
--     readers see the aggregate before or after, never in between.
--     Initial load: replaces the whole aggregate with
--     dwh.monthly_aggregate_from_facts, and every summary with its own
--     recomputation (dwh.build_summaries).
--     Incremental update: adds the pending deltas of etl.touched_group to
--     their groups (what changed deals took away and brought: exact, and
--     proportional to the changes), drops groups left without closed deals,
--     keeps the groups marked with the run for its validation; does the
--     same for every summary (dwh.apply_summary_deltas); then marks the
--     run's window applied: the snapshot, the star schema and all its
--     summaries move together, and a crash before this commit means the
--     next run applies the same window again, whole, to all of them.
-- Returns: NULL (done).
-- Tables: reads dwh.fact_sales_performance (initial load), etl.touched_group, etl.touched_*;
--     writes dwh.fact_sales_monthly_aggregate, dwh.fact_sales_product_summary,
--     dwh.fact_sales_account_summary, dwh.fact_sales_open_pipeline, etl.touched_group,
--     etl.touched_*, etl.run.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.rebuild_monthly_aggregate(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_groups bigint;
    v_deleted bigint;
    v_inserted bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.rebuild_monthly_aggregate');
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;

    IF v_run.pipeline = 'initial_load' THEN
        DELETE FROM dwh.fact_sales_monthly_aggregate;
        GET DIAGNOSTICS v_deleted = ROW_COUNT;
        INSERT INTO dwh.fact_sales_monthly_aggregate (
            month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value, run_id
        )
        SELECT a.month_date_key, a.sales_agent_key, a.product_key, a.won_deals, a.lost_deals,
               a.won_value, v_run.run_id
          FROM dwh.monthly_aggregate_from_facts AS a
         ORDER BY a.month_date_key, a.sales_agent_key, a.product_key;
        GET DIAGNOSTICS v_inserted = ROW_COUNT;
        PERFORM dwh.build_summaries(v_run.run_id);
        PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_inserted,
                                    p_inserted => v_inserted, p_deleted => v_deleted);
        RETURN NULL;
    END IF;

    -- Groups kept for an earlier run's validation are done with.
    DELETE FROM etl.touched_group AS t WHERE t.refreshed_by_run < v_run.run_id;
    SELECT count(*) INTO v_groups FROM etl.touched_group AS t WHERE t.refreshed_by_run IS NULL;
    INSERT INTO dwh.fact_sales_monthly_aggregate AS a (
        month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value, run_id
    )
    SELECT t.month_date_key, t.sales_agent_key, t.product_key, t.won_deals_delta,
           t.lost_deals_delta, t.won_value_delta, v_run.run_id
      FROM etl.touched_group AS t
     WHERE t.refreshed_by_run IS NULL
    ON CONFLICT (month_date_key, sales_agent_key, product_key) DO UPDATE
       SET won_deals = a.won_deals + excluded.won_deals,
           lost_deals = a.lost_deals + excluded.lost_deals,
           won_value = a.won_value + excluded.won_value,
           run_id = excluded.run_id;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    -- A group left without closed deals has no row.
    DELETE FROM dwh.fact_sales_monthly_aggregate AS a
     USING etl.touched_group AS t
     WHERE t.refreshed_by_run IS NULL
       AND a.month_date_key = t.month_date_key AND a.sales_agent_key = t.sales_agent_key
       AND a.product_key = t.product_key AND a.won_deals = 0 AND a.lost_deals = 0;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    UPDATE etl.touched_group SET refreshed_by_run = v_run.run_id WHERE refreshed_by_run IS NULL;
    PERFORM dwh.apply_summary_deltas(v_run.run_id);
    UPDATE etl.run SET window_applied = true WHERE run_id = v_run.run_id;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_groups,
                                p_inserted => v_inserted, p_deleted => v_deleted);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.rebuild_monthly_aggregate(bigint) IS
'Unit of dwh.load_fact_sales_monthly_aggregate: replaces the aggregate and the summaries (initial load) or '
'adds the exact deltas of etl.touched_group and etl.touched_* to them and marks the window applied '
'(incremental).';
