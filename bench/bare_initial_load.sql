-- The bare bound for the initial load: hand-written CREATE TABLE ... AS
-- SELECT of the same fact rows and the same monthly aggregate, from the same
-- source (through the same foreign tables), with the primary key build, and
-- nothing else: no staging, no batches, no data-quality rules, no metadata.
-- Run in the warehouse after an initial load (it reuses its dimensions):
--     psql -d b2b_sales_olap -f bench/bare_initial_load.sql
-- Compare with the initial load's steps before validation:
--     SELECT sum(finished_at - started_at) FROM etl.loading_metadata
--      WHERE run_id = (SELECT max(run_id) FROM etl.run)
--        AND step NOT IN ('etl.validate_run', 'etl.finish_run');
\timing on
DROP TABLE IF EXISTS public.bare_fact, public.bare_aggregate;

CREATE TABLE public.bare_fact AS
SELECT
    p.opportunity_id,
    coalesce(a.account_key, -1) AS account_key,
    coalesce(v.product_key, -1) AS product_key,
    coalesce(g.sales_agent_key, -1) AS sales_agent_key,
    st.deal_stage_key,
    dwh.date_key(p.engage_date) AS engage_date_key,
    dwh.date_key(p.close_date) AS close_date_key,
    p.close_value::numeric(18, 2) AS close_value,
    v.sales_price AS list_price,
    st.is_won,
    st.is_closed,
    p.close_date - p.engage_date AS days_to_close,
    false AS is_deleted,
    0::bigint AS run_id
FROM src.sales_pipeline AS p
INNER JOIN dwh.dim_deal_stage AS st ON p.deal_stage = st.deal_stage_name
LEFT JOIN dwh.dim_account AS a ON p.account_id = a.account_id
LEFT JOIN dwh.dim_sales_agent AS g ON p.sales_agent_id = g.sales_agent_id
LEFT JOIN dwh.dim_product AS v ON p.product_id = v.product_id AND v.is_current;

ALTER TABLE public.bare_fact ADD PRIMARY KEY (opportunity_id);

CREATE TABLE public.bare_aggregate AS
SELECT
    d.month_start_key AS month_date_key,
    f.sales_agent_key,
    f.product_key,
    count(*) FILTER (WHERE f.is_won) AS won_deals,
    count(*) FILTER (WHERE NOT f.is_won) AS lost_deals,
    coalesce(sum(f.close_value) FILTER (WHERE f.is_won), 0) AS won_value
FROM public.bare_fact AS f
INNER JOIN dwh.dim_date AS d ON f.close_date_key = d.date_key
WHERE f.is_closed
GROUP BY d.month_start_key, f.sales_agent_key, f.product_key;

DROP TABLE public.bare_fact, public.bare_aggregate;
