-- Procedure: etl.run_horizon_move(p_batch_size integer)
--     Moves facts across the horizon in one call, for psql users: the facts
--     of deals closed before etl.config cold_horizon go to the cold part of
--     dwh.fact_sales_performance, any the horizon no longer covers come back
--     to the hot part. The Airflow DAG dwh_horizon_move calls the same
--     steps one task each. Content, aggregates and reports do not change.
-- Parameters:
--     p_batch_size - facts per committed batch (default: etl.config)
-- Steps: etl.start_run, dwh.move_facts_across_horizon, etl.validate_run,
--     etl.finish_run.
-- Commits: per step and per batch. Safe to re-run: yes (what is in place
--     is not moved again).
CREATE OR REPLACE PROCEDURE etl.run_horizon_move(p_batch_size integer DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_run_id bigint;
BEGIN
    CALL etl.start_run('horizon_move', p_batch_size, v_run_id, p_in_one_call => true);
    CALL dwh.move_facts_across_horizon(v_run_id);
    CALL etl.validate_run(v_run_id);
    CALL etl.finish_run(v_run_id);
    RAISE NOTICE 'horizon move run % succeeded', v_run_id;
END
$proc$;

COMMENT ON PROCEDURE etl.run_horizon_move(integer) IS  -- noqa: LT01
'Entry point: moves facts across the horizon of etl.config cold_horizon (the steps of DAG '
'dwh_horizon_move) in one call; optional batch size.';
