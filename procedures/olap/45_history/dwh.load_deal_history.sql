-- Procedure: dwh.load_deal_history(p_run_id bigint)
--     Brings the deal history (dwh.fact_deal_history) up to date with the
--     facts in one transaction: seeded from them after an initial load; after
--     an incremental one, a row per committed transaction of the window that
--     altered a deal's stage, agent, product, account or value, valid from
--     its changed_at (unit: dwh.apply_deal_history). Runs after the fact step
--     and before the aggregate step, which marks the window applied: a run
--     that dies in between applies the same window again, which this step
--     absorbs.
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads dwh.fact_sales_performance, etl.change_window, dwh
--     dimensions; writes dwh.fact_deal_history.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_deal_history(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_deal_history', 'dwh.fact_deal_history', 'dwh.apply_deal_history');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_deal_history(bigint) IS  -- noqa: LT01
'Step: brings dwh.fact_deal_history up to date with the facts in one transaction: the seed after an '
'initial load, a row per committed change after an incremental one (unit dwh.apply_deal_history).';
