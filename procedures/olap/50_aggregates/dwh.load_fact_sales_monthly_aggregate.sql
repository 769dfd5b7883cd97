-- Procedure: dwh.load_fact_sales_monthly_aggregate(p_run_id bigint)
--     Rebuilds the monthly aggregate from the facts in one transaction, so
--     readers see the old table or the new one, never a mix (unit:
--     dwh.rebuild_monthly_aggregate).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads dwh.fact_sales_performance, dwh.dim_date; writes
--     dwh.fact_sales_monthly_aggregate.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_fact_sales_monthly_aggregate(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_fact_sales_monthly_aggregate',
                      'dwh.fact_sales_monthly_aggregate', 'dwh.rebuild_monthly_aggregate');
END
$proc$;
