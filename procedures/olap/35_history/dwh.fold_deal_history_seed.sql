-- Function: dwh.fold_deal_history_seed(p_run_id bigint) RETURNS bigint
--     The initial load's part of the as-of summaries: the contributions of
--     dwh.deal_history_seed (every deal, as its fact tells it), written
--     straight from the facts into the emptied summaries. The same
--     definitions as dwh.fold_deal_history, which reads history rows, but
--     without making the 1.5 million rows of scale 100 first (the generic
--     fold over the seed view took 15 s there; this about 5 on the same
--     loaded machine, still a fifth of the initial load: docs/benchmarks.md);
--     tests/test_deal_history.py holds both to a recomputation from
--     dwh.v_deal_history. A seed row's day is its date (00:00 UTC), or the
--     load's snapshot time's UTC day for a missing date; a closed deal has
--     an Engaging row when engaged before it closed.
-- Parameters:
--     p_run_id - the initial load (its source_snapshot_at)
-- Returns: the number of summary rows written.
-- Tables: reads dwh.fact_sales_performance, dwh.dim_product,
--     dwh.dim_deal_stage, etl.run; writes dwh.deal_pipeline_day,
--     dwh.deal_pipeline_month, dwh.deal_stage_conversion (empty before: their primary keys are set
--     aside while they fill and rebuilt after), etl.suspended_ddl.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: called by dwh.apply_deal_history.
CREATE OR REPLACE FUNCTION dwh.fold_deal_history_seed(p_run_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- It reads every fact: sequential scans, whatever its caller
-- (dwh.apply_deal_history turns them off for its lookups by key).
SET enable_seqscan = on
AS $fn$
DECLARE
    v_snapshot_at timestamptz;
    v_snapshot_key integer;
    v_engaging smallint;
    v_written bigint;
BEGIN
    SELECT r.source_snapshot_at INTO v_snapshot_at FROM etl.run AS r WHERE r.run_id = p_run_id;
    v_snapshot_key := dwh.date_key((v_snapshot_at AT TIME ZONE 'UTC')::date);
    SELECT s.deal_stage_key INTO v_engaging FROM dwh.dim_deal_stage AS s WHERE s.deal_stage_name = 'Engaging';

    -- The summaries are empty: their keys go aside while they fill, and are
    -- built by one sort each afterwards (etl.suspend_ddl, etl.restore_ddl).
    PERFORM etl.suspend_ddl(t) FROM unnest(ARRAY['dwh.deal_pipeline_day', 'dwh.deal_pipeline_month',
                                                 'dwh.deal_stage_conversion']::regclass[]) AS t;

    -- One statement, each summary from its own pass over the facts (a
    -- scan is cheaper than writing them to a temporary table once), with
    -- what each live fact's seed rows are: date keys, -1 meaning the
    -- snapshot's day.
    WITH seed AS NOT MATERIALIZED (
        -- product versions, not ids: a version's product id is looked up once
        -- per group (product_ids below), not once per fact
        SELECT f.deal_stage_key, f.sales_agent_key, f.product_key, f.is_closed, f.engage_date_key,
               -- the open stay's first day, and (closed deals) the closing day
               CASE WHEN f.engage_date_key <> -1 THEN f.engage_date_key ELSE v_snapshot_key END AS from_key,
               CASE WHEN f.close_date_key <> -1 THEN f.close_date_key ELSE v_snapshot_key END AS close_key,
               f.is_closed AND f.engage_date_key <> -1
               AND CASE WHEN f.close_date_key <> -1 THEN f.engage_date_key < f.close_date_key
                        ELSE make_date(f.engage_date_key / 10000, f.engage_date_key / 100 % 100,
                                       f.engage_date_key % 100)::timestamp AT TIME ZONE 'UTC' < v_snapshot_at
                   END AS was_engaging
          FROM dwh.fact_sales_performance AS f
         WHERE NOT f.is_deleted
    ),
    product_ids AS (
        SELECT p.product_key, coalesce(p.product_id, -1) AS product_id, coalesce(p.sales_price, 0) AS list_price
          FROM dwh.dim_product AS p
    ),
    -- Open pipeline: an open deal enters its stage on its first day; a
    -- closed deal's Engaging row enters on its engage day and leaves on its
    -- close day. Each part counted on its own, then together; the value is
    -- the deals' list price (their product version's sales price), one
    -- multiplication per group, not a sum over the facts.
    changes AS (
        SELECT c.day_key, c.deal_stage_key, c.sales_agent_key, i.product_id,
               sum(c.deals) AS deals, sum(c.deals * i.list_price) AS open_value
          FROM (SELECT s.from_key AS day_key, s.deal_stage_key, s.sales_agent_key, s.product_key,
                       count(*) AS deals
                  FROM seed AS s WHERE NOT s.is_closed GROUP BY 1, 2, 3, 4
                UNION ALL
                SELECT s.engage_date_key, v_engaging, s.sales_agent_key, s.product_key, count(*)
                  FROM seed AS s WHERE s.was_engaging GROUP BY 1, 2, 3, 4
                UNION ALL
                SELECT s.close_key, v_engaging, s.sales_agent_key, s.product_key, -count(*)
                  FROM seed AS s WHERE s.was_engaging GROUP BY 1, 2, 3, 4) AS c
          JOIN product_ids AS i ON i.product_key = c.product_key
         GROUP BY c.day_key, c.deal_stage_key, c.sales_agent_key, i.product_id
        HAVING sum(c.deals) <> 0 OR sum(c.deals * i.list_price) <> 0
    ),
    day_rows AS (
        INSERT INTO dwh.deal_pipeline_day (day, deal_stage_key, sales_agent_key, product_id, deals, open_value)
        SELECT make_date(c.day_key / 10000, c.day_key / 100 % 100, c.day_key % 100), c.deal_stage_key,
               c.sales_agent_key, c.product_id, c.deals, c.open_value
          FROM changes AS c
        RETURNING 1
    ),
    month_rows AS (
        INSERT INTO dwh.deal_pipeline_month (month, deal_stage_key, sales_agent_key, product_id, deals, open_value)
        SELECT make_date(c.day_key / 10000, c.day_key / 100 % 100, 1), c.deal_stage_key, c.sales_agent_key,
               c.product_id, sum(c.deals), sum(c.open_value)
          FROM changes AS c
         GROUP BY 1, c.deal_stage_key, c.sales_agent_key, c.product_id
        HAVING sum(c.deals) <> 0 OR sum(c.open_value) <> 0
        RETURNING 1
    ),
    -- Conversion: the entries (a closed deal's Engaging row in its engage
    -- month, converted to its closed stage; every deal's last row in the
    -- month of its first or closing day).
    conversion_rows AS (
        INSERT INTO dwh.deal_stage_conversion (entry_month, from_stage_key, to_stage_key, deals)
        SELECT make_date(c.month_key / 100, c.month_key % 100, 1), c.from_stage_key, c.to_stage_key, sum(c.deals)
          FROM (SELECT CASE WHEN s.is_closed THEN s.close_key ELSE s.from_key END / 100 AS month_key,
                       s.deal_stage_key AS from_stage_key, s.deal_stage_key AS to_stage_key, count(*) AS deals
                  FROM seed AS s GROUP BY 1, 2, 3
                UNION ALL
                SELECT e.month_key, v_engaging, t.stage, sum(e.deals)
                  FROM (SELECT s.engage_date_key / 100 AS month_key, s.deal_stage_key, count(*) AS deals
                          FROM seed AS s WHERE s.was_engaging GROUP BY 1, 2) AS e
                 CROSS JOIN LATERAL (VALUES (v_engaging), (e.deal_stage_key)) AS t (stage)
                 GROUP BY 1, 2, 3) AS c
         GROUP BY 1, 2, 3
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM day_rows) + (SELECT count(*) FROM month_rows)
           + (SELECT count(*) FROM conversion_rows)
      INTO v_written;
    PERFORM etl.restore_ddl(t) FROM unnest(ARRAY['dwh.deal_pipeline_day', 'dwh.deal_pipeline_month',
                                                 'dwh.deal_stage_conversion']::regclass[]) AS t;
    RETURN v_written;
END
$fn$;

COMMENT ON FUNCTION dwh.fold_deal_history_seed(bigint) IS
'Internal: writes the initial load''s seed (dwh.deal_history_seed) into the emptied as-of summaries, '
'straight from the facts (the definitions of dwh.fold_deal_history).';
