-- Function: etl.check_deal_history(p_run_id bigint) RETURNS void
--     Incremental validation of the deal history, bounded by the window:
--     for every deal the window changed, the history's current row (valid_to
--     infinity; the seed's for a deal without a row of its own, which the
--     history step leaves so when the window only moved it) agrees with the
--     deal's fact: exactly one such row, in the
--     same stage, agent, product (by product id: a version move is no
--     change), account and value, when the fact is live; none when the deal
--     is deleted, quarantined or was never loaded; and no two of the deal's
--     rows start at the same time (the history's key, which a unique index
--     enforces on one server; on Citus, where a unique index must hold the
--     distribution column and this one is on its md5, this check is what
--     holds it). Records one row in etl.validation_result.
-- Parameters:
--     p_run_id - the incremental run to check
-- Tables: reads etl.stage_sales_pipeline, etl.stage_deleted,
--     dwh.fact_sales_performance, dwh.fact_deal_history, dwh.deal_history_seed,
--     dwh.dim_product;
--     writes etl.validation_result.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: called by etl.validate.
CREATE OR REPLACE FUNCTION etl.check_deal_history(p_run_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
DECLARE
    v_keys text[];
    v_key_md5s text[];
BEGIN
    -- The deals go as arrays (= ANY, constants to the planner: index scans;
    -- as a join, the planner scanned every fact and the whole history).
    SELECT coalesce(array_agg(x.opportunity_id), '{}'), coalesce(array_agg(md5(x.opportunity_id)), '{}')
      INTO v_keys, v_key_md5s
      FROM (SELECT s.opportunity_id FROM etl.stage_sales_pipeline AS s
            UNION
            SELECT d.row_key FROM etl.stage_deleted AS d WHERE d.table_name = 'sales_pipeline') AS x;

    WITH fact AS (
        SELECT f.opportunity_id, f.deal_stage_key, f.sales_agent_key, coalesce(p.product_id, -1) AS product_id,
               f.account_key, f.close_value
          FROM dwh.fact_sales_performance AS f
          LEFT JOIN dwh.dim_product AS p ON p.product_key = f.product_key
         WHERE f.opportunity_id = ANY (v_keys) AND NOT f.is_deleted
    ),
    current_row AS (
        SELECT h.opportunity_id, count(*) AS rows, min(h.deal_stage_key) AS deal_stage_key,
               min(h.sales_agent_key) AS sales_agent_key, min(coalesce(p.product_id, -1)) AS product_id,
               min(h.account_key) AS account_key, min(h.close_value) AS close_value
          FROM dwh.fact_deal_history AS h
          LEFT JOIN dwh.dim_product AS p ON p.product_key = h.product_key
         WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = ANY (v_keys)
           AND h.valid_to = 'infinity'
         GROUP BY h.opportunity_id
        UNION ALL
        -- a deal the window moved without changing it keeps its seed (no row of its own)
        SELECT s.opportunity_id, count(*), min(s.deal_stage_key), min(s.sales_agent_key),
               min(coalesce(p.product_id, -1)), min(s.account_key), min(s.close_value)
          FROM dwh.deal_history_seed AS s
          LEFT JOIN dwh.dim_product AS p ON p.product_key = s.product_key
         WHERE s.opportunity_id = ANY (v_keys) AND s.valid_to = 'infinity'
           AND NOT EXISTS (SELECT 1 FROM dwh.fact_deal_history AS h
                            WHERE md5(h.opportunity_id) = md5(s.opportunity_id)
                              AND h.opportunity_id = s.opportunity_id)
         GROUP BY s.opportunity_id
    ),
    repeated AS (
        SELECT DISTINCT h.opportunity_id
          FROM dwh.fact_deal_history AS h
         WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = ANY (v_keys)
         GROUP BY h.opportunity_id, h.valid_from
        HAVING count(*) > 1
    )
    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'the deal history''s current row agrees with the fact of every changed deal',
           c.wrong = 0, '0 of ' || c.changed, c.wrong::text, CASE WHEN c.wrong > 0 THEN c.sample END
      FROM (SELECT count(*) AS changed,
                   count(*) FILTER (WHERE NOT x.ok) AS wrong,
                   jsonb_agg(x.opportunity_id) FILTER (WHERE NOT x.ok) AS sample
              FROM (SELECT k.opportunity_id,
                           r.opportunity_id IS NULL
                           AND CASE WHEN f.opportunity_id IS NULL THEN h.opportunity_id IS NULL
                                ELSE h.rows = 1
                                     AND (h.deal_stage_key, h.sales_agent_key, h.product_id, h.account_key,
                                          h.close_value)
                                         IS NOT DISTINCT FROM
                                         (f.deal_stage_key, f.sales_agent_key, f.product_id, f.account_key,
                                          f.close_value)
                           END AS ok
                      FROM unnest(v_keys) AS k (opportunity_id)
                      LEFT JOIN fact AS f ON f.opportunity_id = k.opportunity_id
                      LEFT JOIN current_row AS h ON h.opportunity_id = k.opportunity_id
                      LEFT JOIN repeated AS r ON r.opportunity_id = k.opportunity_id) AS x) AS c;
END
$fn$;

COMMENT ON FUNCTION etl.check_deal_history(bigint) IS
'Validation (internal, called by etl.validate): the deal history''s current row agrees with the fact of '
'every deal the incremental run''s window changed; records one check.';
