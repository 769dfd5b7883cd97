-- Function: dwh.rebuild_monthly_aggregate(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_fact_sales_monthly_aggregate: replaces the aggregate
--     with dwh.monthly_aggregate_from_facts, in the caller's transaction.
-- Returns: NULL (done).
-- Tables: writes dwh.fact_sales_monthly_aggregate.
CREATE OR REPLACE FUNCTION dwh.rebuild_monthly_aggregate(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id bigint;
    v_deleted bigint;
    v_inserted bigint;
BEGIN
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    DELETE FROM dwh.fact_sales_monthly_aggregate;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    INSERT INTO dwh.fact_sales_monthly_aggregate (
        month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value, run_id
    )
    SELECT a.month_date_key, a.sales_agent_key, a.product_key, a.won_deals, a.lost_deals,
           a.won_value, v_run_id
      FROM dwh.monthly_aggregate_from_facts AS a
     ORDER BY a.month_date_key, a.sales_agent_key, a.product_key;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_inserted, p_inserted => v_inserted,
                                p_deleted => v_deleted);
    RETURN NULL;
END
$fn$;
