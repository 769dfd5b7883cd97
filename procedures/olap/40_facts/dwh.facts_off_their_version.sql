-- Function: dwh.facts_off_their_version(p_run_id bigint)
--           RETURNS TABLE (opportunity_id text, old_key integer, new_key integer, list_price numeric)
--     The facts whose deal's engage date lies in the period of a product
--     version that run p_run_id opened, but that sit on another version of
--     the product: what the fact step moves (dwh.insert_fact_batch) and what
--     validation expects none of afterwards (etl.validate). A fact with no
--     engage date, or one outside the calendar (key -1), never matches.
--
--     Which versions can take facts: only the ones the run opened (valid
--     from one of its window's product events: etl.change_window). A
--     version's period of engage dates runs from its valid_from to the next
--     version's, so writing versions only ever narrows the periods of the
--     ones before; a version the run merely closed or renamed gains nothing.
--     A product's first version gains nothing either: every other version of
--     the product came after it, so no fact was ever placed by a lookup that
--     did not already see it. What is left starts at an event of the window,
--     at the change's time: the deals engaged since then, mostly open ones,
--     and those in the future.
--
--     How they are found, without an index of its own (an index on
--     (product_key, engage_date_key) did it, but maintaining it on every fact
--     written cost the incremental update a quarter of its time: issue 11,
--     docs/benchmarks.md): every fact engaged on or after the earliest such
--     start is in exactly one of
--       - the live open deals: fact_sales_performance_open_idx
--         (deal_stage_key, engage_date_key), one range per stage;
--       - the closed or deleted deals closed on or after their engage date,
--         hence on or after that start: fact_sales_performance_close_date_idx;
--       - the closed or deleted deals whose close date is unknown or before
--         the engage date (deleted open deals, inverted dates):
--         fact_sales_performance_close_before_engage_idx,
--         partial: a few rows (unknown close date is key -1).
--     The start is a constant of the query (EXECUTE ... USING: planned with
--     its value), so each is an index range scan over the deals engaged or
--     closed since the window's changes, not over the fact table.
-- Parameters:
--     p_run_id - the run whose product versions are checked
-- Returns: one row per misplaced fact: its deal, its version now, the
--     version it belongs on and that version's price.
-- Tables: reads dwh.dim_product, dwh.product_version_lookup, dwh.dim_deal_stage,
--     etl.change_window, dwh.fact_sales_performance.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.facts_off_their_version(p_run_id bigint)
RETURNS TABLE (opportunity_id text, old_key integer, new_key integer, list_price numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
DECLARE
    v_keys integer[];
    v_products integer[];
    v_prices numeric[];
    v_first_keys integer[];
    v_before_keys integer[];
    v_from integer;
    v_stages smallint[];
BEGIN
    -- (The window's changes, a local table, meet the dimension through a
    -- materialised CTE: on Citus the dimension is a reference table.)
    WITH changed AS MATERIALIZED (
        SELECT DISTINCT w.row_key, w.changed_at FROM etl.change_window AS w WHERE w.table_name = 'products'
    )
    SELECT array_agg(o.product_key), array_agg(o.product_id), array_agg(o.sales_price),
           array_agg(o.first_key), array_agg(o.before_key), min(o.first_key)
      INTO v_keys, v_products, v_prices, v_first_keys, v_before_keys, v_from
      FROM (SELECT v.product_key, v.product_id, v.sales_price,
                   dwh.date_key(v.lookup_first_day) AS first_key,
                   CASE WHEN isfinite(v.lookup_before_day) THEN dwh.date_key(v.lookup_before_day)
                        ELSE 2147483647 END AS before_key
              FROM dwh.product_version_lookup AS v
              JOIN dwh.dim_product AS d ON d.product_key = v.product_key
              JOIN changed AS w ON w.row_key = d.product_id::text AND w.changed_at = d.valid_from
             WHERE d.run_id = p_run_id
               AND isfinite(v.lookup_first_day)) AS o;
    IF v_from IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(s.deal_stage_key) INTO v_stages FROM dwh.dim_deal_stage AS s;

    RETURN QUERY EXECUTE $query$
        WITH opened AS (
            SELECT *
              FROM unnest($3::integer[], $4::integer[], $5::numeric[], $6::integer[], $7::integer[])
                   AS t (product_key, product_id, sales_price, first_key, before_key)
        ),
        engaged_since AS (
            SELECT f.opportunity_id, f.product_key, f.engage_date_key
              FROM dwh.fact_sales_performance AS f
             WHERE f.deal_stage_key = ANY($2) AND f.engage_date_key >= $1
               AND NOT f.is_closed AND NOT f.is_deleted
            UNION ALL
            SELECT f.opportunity_id, f.product_key, f.engage_date_key
              FROM dwh.fact_sales_performance AS f
             WHERE f.close_date_key >= $1 AND f.engage_date_key >= $1
               AND f.close_date_key >= f.engage_date_key AND (f.is_closed OR f.is_deleted)
            UNION ALL
            SELECT f.opportunity_id, f.product_key, f.engage_date_key
              FROM dwh.fact_sales_performance AS f
             WHERE f.engage_date_key >= $1
               AND f.close_date_key < f.engage_date_key AND (f.is_closed OR f.is_deleted)
        )
        SELECT e.opportunity_id, e.product_key, t.product_key, t.sales_price
          FROM opened AS t
          JOIN dwh.dim_product AS o ON o.product_id = t.product_id AND o.product_key <> t.product_key
          JOIN engaged_since AS e
            ON e.product_key = o.product_key
           AND e.engage_date_key >= t.first_key AND e.engage_date_key < t.before_key
    $query$
    USING v_from, v_stages, v_keys, v_products, v_prices, v_first_keys, v_before_keys;
END
$fn$;

COMMENT ON FUNCTION dwh.facts_off_their_version(bigint) IS
'The facts engaged in the period of a product version the run opened but on another version of the '
'product (moved by the fact step, none expected by validation); found through the open-deal, '
'close-date and close-before-engage indexes over the deals engaged since the window''s changes.';
