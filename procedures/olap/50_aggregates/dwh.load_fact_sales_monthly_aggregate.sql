-- Procedure: dwh.load_fact_sales_monthly_aggregate(p_run_id bigint)
--     Brings the monthly aggregate and the summaries (product, account,
--     open pipeline) up to date with the facts in one transaction: all of
--     them after an initial load; after an incremental one, the deltas of
--     the groups the window's deals left or entered, which also marks the
--     window applied (unit: dwh.rebuild_monthly_aggregate).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads dwh.fact_sales_performance, etl.touched_group, etl.touched_*; writes
--     dwh.fact_sales_monthly_aggregate, dwh.fact_sales_product_summary,
--     dwh.fact_sales_account_summary, dwh.fact_sales_open_pipeline, etl.touched_group,
--     etl.touched_*, etl.run.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_fact_sales_monthly_aggregate(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_fact_sales_monthly_aggregate',
                      'dwh.fact_sales_monthly_aggregate', 'dwh.rebuild_monthly_aggregate');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_fact_sales_monthly_aggregate(bigint) IS  -- noqa: LT01
'Step: brings dwh.fact_sales_monthly_aggregate and the summaries up to date with the facts in one transaction'
' and marks an incremental window applied (unit dwh.rebuild_monthly_aggregate).';
