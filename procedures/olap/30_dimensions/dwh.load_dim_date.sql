-- Procedure: dwh.load_dim_date(p_run_id bigint)
--     Extends dim_date over the staged dates (unit: dwh.extend_dim_date_to_stage).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.stage_sales_pipeline; writes dwh.dim_date.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_dim_date(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_dim_date', 'dwh.dim_date', 'dwh.extend_dim_date_to_stage');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_dim_date(bigint) IS  -- noqa: LT01
'Step: extends dwh.dim_date over the staged dates (unit dwh.extend_dim_date_to_stage); commits once, '
'safe to re-run.';
