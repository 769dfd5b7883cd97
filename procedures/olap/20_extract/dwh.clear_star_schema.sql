-- Function: dwh.clear_star_schema() RETURNS void
--     Empties the star schema for a rebuild, keeping the Unknown members
--     and the deal stages, and restarts the surrogate keys so that a
--     rebuild from the same source gives the same keys.
-- Tables: writes every dwh table.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.clear_star_schema()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    TRUNCATE dwh.fact_sales_monthly_aggregate, dwh.fact_sales_product_summary, dwh.fact_sales_account_summary,
             dwh.fact_sales_open_pipeline, dwh.fact_sales_performance, dwh.fact_deal_history,
             dwh.deal_pipeline_day, dwh.deal_pipeline_month, dwh.deal_stage_duration,
             dwh.deal_stage_conversion;
    DELETE FROM dwh.dim_account WHERE account_key <> -1;
    DELETE FROM dwh.dim_product WHERE product_key <> -1;
    DELETE FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1;
    DELETE FROM dwh.dim_date WHERE date_key <> -1;
    PERFORM setval(pg_get_serial_sequence('dwh.dim_account', 'account_key'), 1, false);
    PERFORM setval(pg_get_serial_sequence('dwh.dim_product', 'product_key'), 1, false);
    PERFORM setval(pg_get_serial_sequence('dwh.dim_sales_agent', 'sales_agent_key'), 1, false);
END
$fn$;

COMMENT ON FUNCTION dwh.clear_star_schema() IS
'Empties every dwh table for a rebuild, keeping the Unknown members and the deal stages, and restarts'
' the surrogate keys.';
