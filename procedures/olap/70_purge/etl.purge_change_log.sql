-- Procedure: etl.purge_change_log(p_run_id bigint)
--     Incremental update: tells the source how far the warehouse has applied
--     its change log, so that the source purges the changes every reader has
--     applied and that are older than change_retention (unit:
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
'Step: reports how far the warehouse applied the source''s change log (src.cdc_consumer) so the source'
' purges applied changes older than change_retention (unit etl.report_applied_position).';
