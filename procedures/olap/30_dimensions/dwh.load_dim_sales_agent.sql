-- Procedure: dwh.load_dim_sales_agent(p_run_id bigint)
--     Loads the staged sales_agents into dwh.dim_sales_agent as SCD type 1 (attributes overwritten)
--     (unit: dwh.upsert_dim_sales_agent).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.stage_sales_agents; writes dwh.dim_sales_agent.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_dim_sales_agent(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent', 'dwh.upsert_dim_sales_agent');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_dim_sales_agent(bigint) IS  -- noqa: LT01
'Step: loads the staged sales agents into dwh.dim_sales_agent as SCD type 1 (unit '
'dwh.upsert_dim_sales_agent); commits once, safe to re-run.';
