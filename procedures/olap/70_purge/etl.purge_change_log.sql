-- Procedure: etl.purge_change_log(p_run_id bigint)
--     Incremental update (after validation) and initial load (right after
--     the extract): tells the source where this warehouse's next window
--     starts, under its own consumer name, so that the source holds back the
--     changes it has not applied and purges those every reader has applied
--     and that are older than change_retention (unit:
--     etl.report_applied_position; the purge itself is cdc.purge_consumed,
--     in the source).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.run, etl.config; writes src.cdc_consumer (the source's
--     cdc.consumer).
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE etl.purge_change_log(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'etl.purge_change_log', 'src.cdc_consumer', 'etl.report_applied_position');
END
$proc$;

COMMENT ON PROCEDURE etl.purge_change_log(bigint) IS  -- noqa: LT01
'Step (both pipelines): reports where the warehouse''s next change window starts (src.cdc_consumer) so'
' the source holds back what it has not applied and purges applied changes older than change_retention'
' (unit etl.report_applied_position).';
