-- Function: dwh.fold_deal_history() RETURNS bigint
--     Adds the contributions of the history rows in pg_temp.deal_history_rows
--     to the as-of summaries, each row times its sign: +1 for rows that are
--     now in dwh.v_deal_history, -1 for rows that were before the current
--     change (old contribution out, new in: the one mechanism for the seed,
--     a window, and a window applied again, whose before and after are equal).
--       - dwh.deal_pipeline_day / _month: a row of an open stage adds its
--         deal (and its list price: its product version's sales price, as
--         the open pipeline is valued everywhere; open deals have no close
--         value in a CRM) on its valid_from's UTC day and takes it away on
--         its valid_to's (never, while current);
--       - dwh.deal_stage_conversion: a row entering a stage is one entry in
--         its valid_from's UTC month, and one conversion to each stage of its
--         later_stages.
--     pg_temp.deal_history_rows (a temporary table or view the caller made)
--     has the columns of dwh.deal_history_seed (later_stages included) and
--     sign. Groups whose sum is zero are not written.
-- Returns: the number of summary rows written.
-- Tables: reads pg_temp.deal_history_rows, dwh.dim_product; writes
--     dwh.deal_pipeline_day, dwh.deal_pipeline_month, dwh.deal_stage_conversion.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: called by dwh.apply_deal_history.
CREATE OR REPLACE FUNCTION dwh.fold_deal_history()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
DECLARE
    v_written bigint;
BEGIN
    WITH r AS MATERIALIZED (
        SELECT x.sign, x.deal_stage_key, x.sales_agent_key,
               coalesce(p.product_id, -1) AS product_id, coalesce(p.sales_price, 0) AS list_price,
               x.is_closed, x.entered_stage, x.later_stages,
               (x.valid_from AT TIME ZONE 'UTC')::date AS from_day,
               CASE WHEN x.valid_to <> 'infinity' THEN (x.valid_to AT TIME ZONE 'UTC')::date END AS to_day
          FROM pg_temp.deal_history_rows AS x
          LEFT JOIN dwh.dim_product AS p ON p.product_key = x.product_key
    ),
    pipeline AS (
        SELECT d.day, r.deal_stage_key, r.sales_agent_key, r.product_id,
               sum(r.sign * d.sign) AS deals, sum(r.sign * d.sign * r.list_price) AS open_value
          FROM r
         CROSS JOIN LATERAL (VALUES (r.from_day, 1), (r.to_day, -1)) AS d (day, sign)
         WHERE NOT r.is_closed AND d.day IS NOT NULL
         GROUP BY d.day, r.deal_stage_key, r.sales_agent_key, r.product_id
    ),
    day_rows AS (
        INSERT INTO dwh.deal_pipeline_day AS t (day, deal_stage_key, sales_agent_key, product_id, deals, open_value)
        SELECT p.day, p.deal_stage_key, p.sales_agent_key, p.product_id, p.deals, p.open_value
          FROM pipeline AS p
         WHERE p.deals <> 0 OR p.open_value <> 0
        ON CONFLICT (day, deal_stage_key, sales_agent_key, product_id) DO UPDATE
           SET deals = t.deals + excluded.deals, open_value = t.open_value + excluded.open_value
        RETURNING 1
    ),
    month_rows AS (
        INSERT INTO dwh.deal_pipeline_month AS t (month, deal_stage_key, sales_agent_key, product_id, deals, open_value)
        SELECT date_trunc('month', p.day)::date, p.deal_stage_key, p.sales_agent_key, p.product_id,
               sum(p.deals), sum(p.open_value)
          FROM pipeline AS p
         GROUP BY 1, p.deal_stage_key, p.sales_agent_key, p.product_id
        HAVING sum(p.deals) <> 0 OR sum(p.open_value) <> 0
        ON CONFLICT (month, deal_stage_key, sales_agent_key, product_id) DO UPDATE
           SET deals = t.deals + excluded.deals, open_value = t.open_value + excluded.open_value
        RETURNING 1
    ),
    conversion_rows AS (
        INSERT INTO dwh.deal_stage_conversion AS t (entry_month, from_stage_key, to_stage_key, deals)
        SELECT date_trunc('month', r.from_day)::date, r.deal_stage_key, s.to_stage_key, sum(r.sign)
          FROM r
         CROSS JOIN LATERAL (SELECT r.deal_stage_key AS to_stage_key
                             UNION
                             SELECT l.stage FROM unnest(r.later_stages) AS l (stage)) AS s
         WHERE r.entered_stage
         GROUP BY 1, 2, 3
        HAVING sum(r.sign) <> 0
        ON CONFLICT (entry_month, from_stage_key, to_stage_key) DO UPDATE
           SET deals = t.deals + excluded.deals
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM day_rows) + (SELECT count(*) FROM month_rows)
           + (SELECT count(*) FROM conversion_rows)
      INTO v_written;
    RETURN v_written;
END
$fn$;

COMMENT ON FUNCTION dwh.fold_deal_history() IS
'Internal: adds the signed contributions of the history rows in pg_temp.deal_history_rows to the as-of '
'summaries (open pipeline per day and month, stage conversion).';
