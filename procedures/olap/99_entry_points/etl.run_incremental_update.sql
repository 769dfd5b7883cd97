-- Procedure: etl.run_incremental_update(p_batch_size integer)
--     Applies every source change committed since the last applied snapshot,
--     in one call, for psql users. The Airflow DAG dwh_incremental_update
--     calls the same steps one task each.
-- Parameters:
--     p_batch_size - deals per committed fact batch (default: etl.config)
-- Steps: etl.start_run, etl.pull_change_window, dwh.load_dim_date,
--     dwh.load_dim_account, dwh.load_dim_sales_agent, dwh.load_dim_product,
--     dwh.load_deal_history, dwh.load_fact_sales_performance,
--     dwh.load_fact_sales_monthly_aggregate,
--     etl.validate_run, etl.purge_change_log, etl.finish_run.
-- Consistency: the window is applied exactly once: its snapshot counts as
--     applied in the transaction that refreshes the aggregate; a run that
--     dies before that is followed by one that pulls the same window again
--     (plus what came since) and applies it whole. Dimension and fact steps
--     write net states and are safe to repeat.
-- Commits: per step and per batch. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE etl.run_incremental_update(p_batch_size integer DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_run_id bigint;
BEGIN
    CALL etl.start_run('incremental_update', p_batch_size, v_run_id, p_in_one_call => true);
    CALL etl.pull_change_window(v_run_id);
    CALL dwh.load_dim_date(v_run_id);
    CALL dwh.load_dim_account(v_run_id);
    CALL dwh.load_dim_sales_agent(v_run_id);
    CALL dwh.load_dim_product(v_run_id);
    CALL dwh.load_deal_history(v_run_id);
    CALL dwh.load_fact_sales_performance(v_run_id);
    CALL dwh.load_fact_sales_monthly_aggregate(v_run_id);
    CALL etl.validate_run(v_run_id);
    CALL etl.purge_change_log(v_run_id);
    CALL etl.finish_run(v_run_id);
    RAISE NOTICE 'incremental update run % succeeded', v_run_id;
END
$proc$;

COMMENT ON PROCEDURE etl.run_incremental_update(integer) IS  -- noqa: LT01
'Entry point: applies every source change committed since the last applied snapshot, all steps in one'
' call (the steps of DAG dwh_incremental_update); optional batch size.';
