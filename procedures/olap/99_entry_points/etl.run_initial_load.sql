-- Procedure: etl.run_initial_load(p_batch_size integer)
--     The whole initial load in one call, for psql users: a full rebuild of
--     the warehouse from one snapshot of the source. The Airflow DAG
--     dwh_initial_load calls the same steps one task each.
-- Parameters:
--     p_batch_size - rows per committed batch (default: etl.config batch_size)
-- Steps: etl.start_run, etl.extract_source, etl.purge_change_log (registers
--     the load's snapshot with the source: what the first incremental window
--     needs is held back from then on), dwh.load_dim_date,
--     dwh.load_dim_account, dwh.load_dim_sales_agent, dwh.load_dim_product,
--     dwh.load_fact_sales_performance, dwh.load_deal_history,
--     dwh.load_fact_sales_monthly_aggregate,
--     etl.validate_run, etl.finish_run.
-- Commits: per step and per batch. Safe to re-run: yes (rebuilds; a failed
--     step can also be called again alone to resume the run).
CREATE OR REPLACE PROCEDURE etl.run_initial_load(p_batch_size integer DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_run_id bigint;
BEGIN
    CALL etl.start_run('initial_load', p_batch_size, v_run_id, p_in_one_call => true);
    CALL etl.extract_source(v_run_id);
    CALL etl.purge_change_log(v_run_id);
    CALL dwh.load_dim_date(v_run_id);
    CALL dwh.load_dim_account(v_run_id);
    CALL dwh.load_dim_sales_agent(v_run_id);
    CALL dwh.load_dim_product(v_run_id);
    CALL dwh.load_fact_sales_performance(v_run_id);
    CALL dwh.load_deal_history(v_run_id);
    CALL dwh.load_fact_sales_monthly_aggregate(v_run_id);
    CALL etl.validate_run(v_run_id);
    CALL etl.finish_run(v_run_id);
    RAISE NOTICE 'initial load run % succeeded', v_run_id;
END
$proc$;

COMMENT ON PROCEDURE etl.run_initial_load(integer) IS  -- noqa: LT01
'Entry point: full rebuild of the warehouse from one source snapshot, all steps in one call (the '
'steps of DAG dwh_initial_load); optional batch size.';
