-- Function: dwh.open_pipeline_as_of(p_day date) RETURNS TABLE (...)
--     The open pipeline at the end of a day: the deals in each open stage
--     (Prospecting, Engaging; Unknown too) per agent and product, and their
--     value at list price (each deal's product version's sales price, as
--     dwh.v_pipeline_by_stage values the open pipeline), as
--     dwh.v_deal_history has them at p_day + 1 00:00 UTC (a deal that closed
--     or went on p_day is not in it; one that entered it on p_day is). A
--     day after today gives today's pipeline (nothing is known beyond). Read from the summaries the history step keeps
--     (dwh.deal_pipeline_month for the months before p_day's, then
--     dwh.deal_pipeline_day for p_day's month up to p_day), never from the
--     history itself: its cost follows the number of agents, products and
--     days in a month, not of deals.
-- Parameters:
--     p_day - the day (its end, UTC); NULL, or a day before the history's
--             first, is refused (22004, 22023) rather than answered with
--             no rows, which would read as an empty pipeline
-- Returns: one row per (stage, agent, product) with open deals; products by
--     their business key (all versions together) and current name.
-- Tables: reads dwh.deal_pipeline_month, dwh.deal_pipeline_day,
--     dwh.dim_deal_stage, dwh.dim_sales_agent, dwh.dim_product.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path
--     pinned; read-only (b2b_reader may call it).
CREATE OR REPLACE FUNCTION dwh.open_pipeline_as_of(p_day date)
RETURNS TABLE (
    deal_stage text,
    sales_agent text,
    product text,
    deal_stage_key smallint,
    sales_agent_key integer,
    product_id integer,
    open_deals bigint,
    open_value numeric
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_first date;
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'dwh.open_pipeline_as_of: the day is NULL' USING ERRCODE = '22004';
    END IF;
    SELECT min(d.day) INTO v_first FROM dwh.deal_pipeline_day AS d;
    IF p_day < v_first THEN
        RAISE EXCEPTION 'dwh.open_pipeline_as_of: the deal history starts on %, after %', v_first, p_day
            USING ERRCODE = '22023',
                  HINT = 'The history starts with the earliest engage date the initial load found.';
    END IF;
    RETURN QUERY
    WITH changes AS (
        SELECT m.deal_stage_key, m.sales_agent_key, m.product_id, m.deals, m.open_value
          FROM dwh.deal_pipeline_month AS m
         WHERE m.month < date_trunc('month', p_day)::date
        UNION ALL
        SELECT d.deal_stage_key, d.sales_agent_key, d.product_id, d.deals, d.open_value
          FROM dwh.deal_pipeline_day AS d
         WHERE d.day >= date_trunc('month', p_day)::date AND d.day <= p_day
    ),
    state AS (
        SELECT c.deal_stage_key, c.sales_agent_key, c.product_id, sum(c.deals)::bigint AS deals,
               sum(c.open_value) AS open_value
          FROM changes AS c
         GROUP BY c.deal_stage_key, c.sales_agent_key, c.product_id
        HAVING sum(c.deals) <> 0
    )
    SELECT st.deal_stage_name, g.sales_agent_name, coalesce(p.product_name, 'Unknown'), s.deal_stage_key,
           s.sales_agent_key, s.product_id, s.deals, s.open_value
      FROM state AS s
      JOIN dwh.dim_deal_stage AS st ON st.deal_stage_key = s.deal_stage_key
      JOIN dwh.dim_sales_agent AS g ON g.sales_agent_key = s.sales_agent_key
      LEFT JOIN LATERAL (
          SELECT v.product_name FROM dwh.dim_product AS v
           WHERE v.product_id = s.product_id ORDER BY v.valid_from DESC LIMIT 1
      ) AS p ON true
     ORDER BY st.stage_order, st.deal_stage_name, g.sales_agent_name, 3;
END
$fn$;

COMMENT ON FUNCTION dwh.open_pipeline_as_of(date) IS
'The open pipeline at the end of a day (UTC), from the deal history''s summaries: open deals and their '
'value at list price per open stage, agent and product (business key, current name).';
