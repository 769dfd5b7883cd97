-- Procedure: dwh.load_deal_history(p_run_id bigint)
--     Brings the deal history (dwh.v_deal_history) and its as-of summaries
--     up to date in one transaction: after an initial load, the seed (a view
--     over the facts) folded into the summaries; after an incremental one, a
--     row per committed transaction of the window that altered a deal's
--     stage, agent, product, account or value, valid from its changed_at
--     (unit: dwh.apply_deal_history). Runs after the dimension steps and
--     before the fact step (a deal's first touch copies its seed from the
--     fact the initial load wrote); the aggregate step marks the window
--     applied, so a run that dies before applies the same window again,
--     which this step absorbs.
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.change_window, etl.stage_sales_pipeline,
--     dwh.deal_history_seed, dwh dimensions; writes dwh.fact_deal_history,
--     dwh.deal_pipeline_day, dwh.deal_pipeline_month, dwh.deal_stage_conversion.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_deal_history(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_deal_history', 'dwh.fact_deal_history', 'dwh.apply_deal_history');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_deal_history(bigint) IS  -- noqa: LT01
'Step: brings the deal history and its as-of summaries up to date in one transaction: the seed after an '
'initial load, a row per committed change after an incremental one (unit dwh.apply_deal_history).';
