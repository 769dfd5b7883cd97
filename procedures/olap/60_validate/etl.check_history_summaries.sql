-- Function: etl.check_history_summaries(p_run_id bigint, p_incremental boolean) RETURNS void
--     Part of etl.validate: the as-of summaries of the deal history
--     (dwh.deal_pipeline_day, dwh.deal_pipeline_month, dwh.deal_stage_conversion)
--     against what they must add up to, from summary rows only, so it costs
--     milliseconds at any scale (a recount from dwh.v_deal_history reads
--     every fact through the seed: 13 s at scale 100). Records three rows in
--     etl.validation_result:
--       - the open pipeline summed over all time (every row opened minus every
--         row closed: the deals whose current row is open) equals the live
--         open deals per stage, as dwh.fact_sales_open_pipeline holds them
--         (itself checked against the facts), and per product
--         (dwh.fact_sales_product_summary's open deals, by product id); a
--         window applied twice, a row closed but not taken out, a deal counted
--         in the wrong stage or product all show. Deals, not value: a history
--         row keeps the price of the version it was written with (a version
--         move is no change), while a fact moves to the version that opens
--         over its engage date, so the two values may part;
--       - each month of dwh.deal_pipeline_month equals the sum of its days in
--         dwh.deal_pipeline_day: every month on an initial load, on an
--         incremental run the UTC months of the window's changes (the only
--         days its events open or close rows on);
--       - dwh.deal_stage_conversion: no count below zero, and no stage
--         reached by more of a month's entries than entered.
--     What these cannot see is a change put on the wrong day within the
--     totals; tests/test_deal_history.py compares every day with a fresh
--     load and an independent oracle.
-- Parameters:
--     p_run_id      - the run being validated
--     p_incremental - true for an incremental run
-- Tables: reads dwh.deal_pipeline_day, dwh.deal_pipeline_month, dwh.deal_stage_conversion,
--     dwh.fact_sales_open_pipeline, dwh.fact_sales_product_summary, dwh.dim_product,
--     etl.change_window; writes etl.validation_result.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: only etl.validate calls it.
CREATE OR REPLACE FUNCTION etl.check_history_summaries(p_run_id bigint, p_incremental boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_first_month date;
    v_last_month date;
BEGIN
    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id,
           'the deal history''s as-of pipeline over all time equals the open pipeline, per stage and per product',
           c.differing = 0, '0 differing stages or products', c.differing::text || ' differing', c.sample
      FROM (SELECT count(*) AS differing, jsonb_agg(to_jsonb(x)) AS sample
              FROM (SELECT 'stage' AS grain, coalesce(h.deal_stage_key, o.deal_stage_key) AS key,
                           h.deals AS as_of_deals, o.deals AS open_deals
                      FROM (SELECT m.deal_stage_key, sum(m.deals) AS deals
                              FROM dwh.deal_pipeline_month AS m
                             GROUP BY m.deal_stage_key
                            HAVING sum(m.deals) <> 0) AS h
                      FULL JOIN (SELECT o.deal_stage_key, sum(o.open_deals) AS deals
                                   FROM dwh.fact_sales_open_pipeline AS o
                                  GROUP BY o.deal_stage_key) AS o
                        ON o.deal_stage_key = h.deal_stage_key
                     WHERE h.deals IS DISTINCT FROM o.deals
                    UNION ALL
                    SELECT 'product', coalesce(h.product_id, o.product_id), h.deals, o.deals
                      FROM (SELECT m.product_id, sum(m.deals) AS deals
                              FROM dwh.deal_pipeline_month AS m
                             GROUP BY m.product_id
                            HAVING sum(m.deals) <> 0) AS h
                      FULL JOIN (SELECT coalesce(p.product_id, -1) AS product_id, sum(s.open_deals) AS deals
                                   FROM dwh.fact_sales_product_summary AS s
                                   LEFT JOIN dwh.dim_product AS p ON p.product_key = s.product_key
                                  GROUP BY 1
                                 HAVING sum(s.open_deals) <> 0) AS o
                        ON o.product_id = h.product_id
                     WHERE h.deals IS DISTINCT FROM o.deals) AS x) AS c;

    IF p_incremental THEN
        SELECT date_trunc('month', min(w.changed_at) AT TIME ZONE 'UTC')::date,
               date_trunc('month', max(w.changed_at) AT TIME ZONE 'UTC')::date
          INTO v_first_month, v_last_month
          FROM etl.change_window AS w
         WHERE w.table_name = 'sales_pipeline';
    ELSE
        v_first_month := '-infinity';
        v_last_month := 'infinity';
    END IF;
    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'the deal history''s as-of pipeline months equal the sums of their days', c.differing = 0,
           '0 differing groups', c.differing::text || ' differing groups', c.sample
      FROM (SELECT count(*) AS differing,
                   jsonb_agg(jsonb_build_object('month', x.month, 'deal_stage_key', x.deal_stage_key,
                                                'sales_agent_key', x.sales_agent_key,
                                                'product_id', x.product_id)) AS sample
              FROM (SELECT coalesce(m.month, d.month) AS month,
                           coalesce(m.deal_stage_key, d.deal_stage_key) AS deal_stage_key,
                           coalesce(m.sales_agent_key, d.sales_agent_key) AS sales_agent_key,
                           coalesce(m.product_id, d.product_id) AS product_id
                      FROM (SELECT * FROM dwh.deal_pipeline_month AS m
                             WHERE m.month BETWEEN v_first_month AND v_last_month) AS m
                      FULL JOIN (SELECT date_trunc('month', d.day)::date AS month, d.deal_stage_key,
                                        d.sales_agent_key, d.product_id,
                                        sum(d.deals) AS deals, sum(d.open_value) AS open_value
                                   FROM dwh.deal_pipeline_day AS d
                                  WHERE d.day >= v_first_month
                                    AND d.day < v_last_month + interval '1 month'
                                  GROUP BY 1, 2, 3, 4) AS d
                        ON d.month = m.month AND d.deal_stage_key = m.deal_stage_key
                       AND d.sales_agent_key = m.sales_agent_key AND d.product_id = m.product_id
                     WHERE (coalesce(m.deals, 0), coalesce(m.open_value, 0))
                           <> (coalesce(d.deals, 0), coalesce(d.open_value, 0))) AS x) AS c;

    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'the deal history''s stage conversions are counts no larger than the entries they follow',
           c.wrong = 0, '0 groups', c.wrong::text || ' groups', c.sample
      FROM (SELECT count(*) AS wrong,
                   jsonb_agg(jsonb_build_object('entry_month', t.entry_month, 'from_stage_key', t.from_stage_key,
                                                'to_stage_key', t.to_stage_key, 'deals', t.deals,
                                                'entries', e.deals)) AS sample
              FROM dwh.deal_stage_conversion AS t
              LEFT JOIN dwh.deal_stage_conversion AS e
                     ON e.entry_month = t.entry_month AND e.from_stage_key = t.from_stage_key
                    AND e.to_stage_key = t.from_stage_key
             WHERE t.deals < 0 OR t.deals > coalesce(e.deals, 0)) AS c;
END
$fn$;

COMMENT ON FUNCTION etl.check_history_summaries(bigint, boolean) IS
'Internal: checks the deal history''s as-of summaries against the open pipeline and product summaries, their '
'months against their days and the stage conversions against their entries (part of etl.validate).';
