-- Function: dwh.stage_durations(p_first_month date, p_last_month date) RETURNS TABLE (...)
--     Days from engaging to closing of the deals that closed in a span of
--     months, per product and agent: how many, the mean, and the 25th, 50th
--     (median), 75th and 90th percentiles, continuous (as percentile_cont
--     computes them), exact. The deals are the live ones closed (Won or
--     Lost) with both dates, each once, in the month of its close date, with
--     its close date minus its engage date as the CRM has them now (a
--     corrected date moves it; a deleted deal leaves). Read from the
--     histogram dwh.deal_stage_duration (deals per close month, agent,
--     product and days, kept from the facts with the monthly aggregate), so
--     the cost follows the distinct durations, not the deals.
-- Parameters:
--     p_first_month - the first month (any day of it)
--     p_last_month  - the last month, included (default: p_first_month);
--                     a NULL first month or a last month before the first is
--                     refused (22004, 22023), not answered with no rows
-- Returns: one row per (product, agent) with closed deals in the span, and
--     one per product over all its agents (sales_agent and sales_agent_key
--     NULL) first; products by business key (all versions together) and
--     current name.
-- Tables: reads dwh.deal_stage_duration, dwh.dim_sales_agent, dwh.dim_product.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path
--     pinned; read-only (b2b_reader may call it).
CREATE OR REPLACE FUNCTION dwh.stage_durations(p_first_month date, p_last_month date DEFAULT NULL)
RETURNS TABLE (
    product text,
    sales_agent text,
    product_id integer,
    sales_agent_key integer,
    closed_deals bigint,
    mean_days numeric,
    p25_days double precision,
    median_days double precision,
    p75_days double precision,
    p90_days double precision
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    IF p_first_month IS NULL THEN
        RAISE EXCEPTION 'dwh.stage_durations: the first month is NULL' USING ERRCODE = '22004';
    END IF;
    IF date_trunc('month', p_last_month) < date_trunc('month', p_first_month) THEN
        RAISE EXCEPTION 'dwh.stage_durations: the last month (%) is before the first (%)',
            to_char(p_last_month, 'YYYY-MM'), to_char(p_first_month, 'YYYY-MM')
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH buckets AS (
        SELECT h.product_id, h.sales_agent_key, h.days, sum(h.deals)::integer AS deals
          FROM dwh.deal_stage_duration AS h
         WHERE h.close_month BETWEEN date_trunc('month', p_first_month)::date
                                 AND date_trunc('month', coalesce(p_last_month, p_first_month))::date
         -- each product per agent, and each product over all its agents
         -- (sales_agent_key NULL): percentiles do not add up, so both come
         -- from the histogram
         GROUP BY GROUPING SETS ((h.product_id, h.sales_agent_key, h.days), (h.product_id, h.days))
        HAVING sum(h.deals) > 0
    ),
    ranked AS (
        -- each bucket holds the closings ranked below .. below + deals - 1 (0-based)
        SELECT b.*,
               -- integer sums (bigint): a bigint's sum is numeric, several times slower
               sum(b.deals) OVER w - b.deals AS below,
               sum(b.deals) OVER (PARTITION BY b.product_id, b.sales_agent_key) AS n,
               sum(b.deals * b.days) OVER (PARTITION BY b.product_id, b.sales_agent_key) AS total_days
          FROM buckets AS b
        WINDOW w AS (PARTITION BY b.product_id, b.sales_agent_key ORDER BY b.days)
    ),
    bounds AS (
        -- percentile_cont(f) interpolates between the values ranked floor(f (n - 1))
        -- and ceil(f (n - 1)), in double precision as it does (so the results are
        -- equal to the last bit): one pass over the buckets finds both, for each f
        SELECT r.product_id, r.sales_agent_key, r.n, r.total_days,
               min(r.days) FILTER (WHERE q.lo25 BETWEEN r.below AND r.below + r.deals - 1) AS lo25,
               min(r.days) FILTER (WHERE q.hi25 BETWEEN r.below AND r.below + r.deals - 1) AS hi25,
               min(r.days) FILTER (WHERE q.lo50 BETWEEN r.below AND r.below + r.deals - 1) AS lo50,
               min(r.days) FILTER (WHERE q.hi50 BETWEEN r.below AND r.below + r.deals - 1) AS hi50,
               min(r.days) FILTER (WHERE q.lo75 BETWEEN r.below AND r.below + r.deals - 1) AS lo75,
               min(r.days) FILTER (WHERE q.hi75 BETWEEN r.below AND r.below + r.deals - 1) AS hi75,
               min(r.days) FILTER (WHERE q.lo90 BETWEEN r.below AND r.below + r.deals - 1) AS lo90,
               min(r.days) FILTER (WHERE q.hi90 BETWEEN r.below AND r.below + r.deals - 1) AS hi90
          FROM ranked AS r
         CROSS JOIN LATERAL (
             SELECT floor(0.25::float8 * (r.n - 1))::bigint AS lo25, ceil(0.25::float8 * (r.n - 1))::bigint AS hi25,
                    floor(0.5::float8 * (r.n - 1))::bigint AS lo50, ceil(0.5::float8 * (r.n - 1))::bigint AS hi50,
                    floor(0.75::float8 * (r.n - 1))::bigint AS lo75, ceil(0.75::float8 * (r.n - 1))::bigint AS hi75,
                    floor(0.9::float8 * (r.n - 1))::bigint AS lo90, ceil(0.9::float8 * (r.n - 1))::bigint AS hi90
         ) AS q
         GROUP BY r.product_id, r.sales_agent_key, r.n, r.total_days
    )
    SELECT coalesce(p.product_name, 'Unknown'), g.sales_agent_name, x.product_id, x.sales_agent_key, x.n,
           round(x.total_days::numeric / x.n, 2),
           x.lo25 + (x.hi25 - x.lo25) * (0.25::float8 * (x.n - 1) - floor(0.25::float8 * (x.n - 1))),
           x.lo50 + (x.hi50 - x.lo50) * (0.5::float8 * (x.n - 1) - floor(0.5::float8 * (x.n - 1))),
           x.lo75 + (x.hi75 - x.lo75) * (0.75::float8 * (x.n - 1) - floor(0.75::float8 * (x.n - 1))),
           x.lo90 + (x.hi90 - x.lo90) * (0.9::float8 * (x.n - 1) - floor(0.9::float8 * (x.n - 1)))
      FROM bounds AS x
      LEFT JOIN dwh.dim_sales_agent AS g ON g.sales_agent_key = x.sales_agent_key
      LEFT JOIN LATERAL (
          SELECT v.product_name FROM dwh.dim_product AS v
           WHERE v.product_id = x.product_id ORDER BY v.valid_from DESC LIMIT 1
      ) AS p ON true
     ORDER BY 1, 2 NULLS FIRST;
END
$fn$;

COMMENT ON FUNCTION dwh.stage_durations(date, date) IS
'Days from engage date to close date of the live deals closed (Won or Lost) with both dates in a span of '
'months, per product and agent and per product (agent NULL): count, mean, and exact continuous 25th, 50th, '
'75th and 90th percentiles, from the summary dwh.deal_stage_duration (kept from the facts).';
