-- Function: dwh.build_summaries(p_run_id bigint) RETURNS bigint
--     Initial load, in the aggregate step's transaction (called by
--     dwh.rebuild_monthly_aggregate): replaces every summary with its
--     recomputation from the facts, one set-based statement each:
--     dwh.fact_sales_product_summary (one grouping of the facts),
--     dwh.fact_sales_account_summary (one grouping, and one join back to
--     the facts for the deals on each account's first and last day),
--     dwh.fact_sales_open_pipeline (the open deals' partial index),
--     dwh.deal_stage_duration (the closed deals with both dates).
-- Parameters:
--     p_run_id - the initial load writing them (lineage)
-- Returns: the summary rows written.
-- Tables: reads dwh.fact_sales_performance, dwh.dim_product, dwh.dim_sales_agent; writes
--     dwh.fact_sales_product_summary, dwh.fact_sales_account_summary, dwh.fact_sales_open_pipeline,
--     dwh.deal_stage_duration.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: only dwh.rebuild_monthly_aggregate (a guarded unit) calls it.
CREATE OR REPLACE FUNCTION dwh.build_summaries(p_run_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rows bigint;
    v_total bigint := 0;
BEGIN
    DELETE FROM dwh.fact_sales_product_summary;
    INSERT INTO dwh.fact_sales_product_summary (
        product_key, deals, open_deals, won_deals, lost_deals, won_value, won_list_value,
        won_listed_deals, discounted_deals, discount, discount_rate, priced_won_value, priced_list_value,
        run_id
    )
    SELECT r.product_key, r.deals, r.open_deals, r.won_deals, r.lost_deals, r.won_value, r.won_list_value,
           r.won_listed_deals, r.discounted_deals, r.discount, r.discount_rate, r.priced_won_value,
           r.priced_list_value, p_run_id
      FROM dwh.product_summary_from_facts AS r
     ORDER BY r.product_key;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM dwh.fact_sales_account_summary;
    INSERT INTO dwh.fact_sales_account_summary (
        account_key, deals, open_deals, won_deals, lost_deals, won_value, won_days, won_timed_deals,
        first_engage_key, first_engage_deals, last_close_key, last_close_deals, run_id
    )
    SELECT r.account_key, r.deals, r.open_deals, r.won_deals, r.lost_deals, r.won_value, r.won_days,
           r.won_timed_deals, r.first_engage_key, r.first_engage_deals, r.last_close_key, r.last_close_deals,
           p_run_id
      FROM dwh.account_summary_from_facts AS r
     ORDER BY r.account_key;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM dwh.fact_sales_open_pipeline;
    INSERT INTO dwh.fact_sales_open_pipeline (deal_stage_key, engage_date_key, open_deals, list_value, run_id)
    SELECT r.deal_stage_key, r.engage_date_key, r.open_deals, r.list_value, p_run_id
      FROM dwh.open_pipeline_from_facts AS r
     ORDER BY r.deal_stage_key, r.engage_date_key;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;

    DELETE FROM dwh.deal_stage_duration;
    INSERT INTO dwh.deal_stage_duration (close_month, sales_agent_key, product_id, days, deals)
    SELECT r.close_month, r.sales_agent_key, r.product_id, r.days, r.deals
      FROM dwh.stage_duration_from_facts AS r
     ORDER BY r.close_month, r.sales_agent_key, r.product_id, r.days;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_total + v_rows;
END
$fn$;

COMMENT ON FUNCTION dwh.build_summaries(bigint) IS
'Initial load: replaces every summary (product, account, open pipeline) with its recomputation from the facts, '
'one set-based statement each; returns the rows written.';
