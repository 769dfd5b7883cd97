-- Procedure: etl.pull_change_window(p_run_id bigint)
--     Incremental update, first step: pulls the window of source changes
--     committed since the last applied snapshot and stages the net state of
--     every changed row (unit: etl.stage_change_window).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads src.source_snapshot, src.change_log; writes etl.change_window,
--     etl.stage_*, etl.run.
-- Commits: once. Safe to re-run: yes (pulls the window again).
CREATE OR REPLACE PROCEDURE etl.pull_change_window(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'etl.pull_change_window', 'etl.change_window', 'etl.stage_change_window');
END
$proc$;

COMMENT ON PROCEDURE etl.pull_change_window(bigint) IS  -- noqa: LT01
'Incremental update, first step: pulls the source changes committed since the last applied snapshot '
'into etl.change_window and stages every changed row (unit etl.stage_change_window).';
