-- Procedure: dwh.move_facts_across_horizon(p_run_id bigint)
--     The step of a horizon move run: applies etl.config cold_horizon to the
--     facts, in committed batches of the run's batch size (unit:
--     dwh.move_fact_batch). An interrupted move called again resumes: it
--     moves what is still misplaced.
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: writes etl.fact_storage, dwh.fact_sales_performance (its parts).
-- Commits: per batch. Safe to re-run: yes (resumes).
CREATE OR REPLACE PROCEDURE dwh.move_facts_across_horizon(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance',
                      'dwh.move_fact_batch');
END
$proc$;

COMMENT ON PROCEDURE dwh.move_facts_across_horizon(bigint) IS  -- noqa: LT01
'Step: moves the facts across the horizon of etl.config cold_horizon (hot to cold, cold to hot) in '
'committed batches of the run''s batch size (unit dwh.move_fact_batch); resumes.';
