-- Procedure: dwh.load_fact_sales_performance(p_run_id bigint)
--     Loads the staged opportunities into the fact table, in batches of the
--     run's batch size, each committed with its place (unit:
--     dwh.insert_fact_batch). An interrupted load called again resumes after
--     its last committed batch.
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.stage_sales_pipeline, dwh dimensions; writes
--     dwh.fact_sales_performance, etl.error_log (quarantine),
--     etl.data_quality_issue.
-- Commits: per batch. Safe to re-run: yes (resumes).
CREATE OR REPLACE PROCEDURE dwh.load_fact_sales_performance(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                      'dwh.insert_fact_batch');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_fact_sales_performance(bigint) IS  -- noqa: LT01
'Step: loads the staged deals into dwh.fact_sales_performance in committed batches of the run''s batch'
' size (unit dwh.insert_fact_batch); resumes after its last batch.';
