-- Procedure: dwh.load_dim_account(p_run_id bigint)
--     Loads the staged accounts into dwh.dim_account as SCD type 1 (attributes overwritten)
--     (unit: dwh.upsert_dim_account).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.stage_accounts; writes dwh.dim_account.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_dim_account(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_dim_account(bigint) IS  -- noqa: LT01
'Step: loads the staged accounts into dwh.dim_account as SCD type 1 (unit dwh.upsert_dim_account); '
'commits once, safe to re-run.';
