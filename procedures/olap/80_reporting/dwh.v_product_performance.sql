-- View: dwh.v_product_performance
--     Performance of each product across all its SCD2 versions (by
--     product_id), named as its latest version: deals won and lost, won
--     value, and what the won deals were worth at list price, each deal
--     priced by the version in effect at its engage date (the fact's
--     list_price). From the facts, live deals only.
-- Columns:
--     won_list_value       - sum of the list prices of the won deals
--     avg_discount         - mean over won deals with a list price of
--                            (list price - close value); negative: above list
--     avg_discount_rate    - mean of (list price - close value) / list price
--     overall_discount_rate - 1 - won value / won list value (value-weighted)
-- Tables: reads dwh.fact_sales_performance, dwh.dim_product.
CREATE OR REPLACE VIEW dwh.v_product_performance AS
WITH latest AS (
    SELECT DISTINCT ON (p.product_id)
        p.product_id,
        p.product_name,
        p.series,
        p.sales_price,
        p.is_deleted
    FROM dwh.dim_product AS p
    ORDER BY p.product_id ASC, p.valid_from DESC
),

versions AS (
    SELECT
        p.product_key,
        p.product_id,
        count(*) OVER (PARTITION BY p.product_id) AS version_count
    FROM dwh.dim_product AS p
),

deals AS (
    SELECT
        v.product_id,
        max(v.version_count) AS version_count,
        count(*) AS deals,
        count(*) FILTER (WHERE NOT f.is_closed) AS open_deals,
        count(*) FILTER (WHERE f.is_won) AS won_deals,
        count(*) FILTER (WHERE f.is_closed AND NOT f.is_won) AS lost_deals,
        coalesce(sum(f.close_value) FILTER (WHERE f.is_won), 0) AS won_value,
        sum(f.list_price) FILTER (WHERE f.is_won) AS won_list_value,
        avg(f.list_price - f.close_value) FILTER (
            WHERE f.is_won AND f.list_price > 0
        ) AS avg_discount,
        avg((f.list_price - f.close_value) / f.list_price) FILTER (
            WHERE f.is_won AND f.list_price > 0
        ) AS avg_discount_rate,
        sum(f.close_value) FILTER (WHERE f.is_won AND f.list_price > 0) AS priced_won_value,
        sum(f.list_price) FILTER (WHERE f.is_won AND f.list_price > 0) AS priced_list_value
    FROM dwh.fact_sales_performance AS f
    INNER JOIN versions AS v ON f.product_key = v.product_key
    WHERE NOT f.is_deleted
    GROUP BY v.product_id
)

SELECT
    l.product_id,
    l.product_name,
    l.series,
    l.sales_price AS current_list_price,
    coalesce(d.version_count, 1)::integer AS versions,
    coalesce(d.deals, 0)::integer AS deals,
    coalesce(d.open_deals, 0)::integer AS open_deals,
    coalesce(d.won_deals, 0)::integer AS won_deals,
    coalesce(d.lost_deals, 0)::integer AS lost_deals,
    coalesce(d.won_value, 0)::numeric(18, 2) AS won_value,
    round(d.won_deals::numeric / nullif(d.won_deals + d.lost_deals, 0), 4) AS win_rate,
    d.won_list_value::numeric(18, 2) AS won_list_value,
    round(d.avg_discount, 2) AS avg_discount,
    round(d.avg_discount_rate, 4) AS avg_discount_rate,
    round(1 - d.priced_won_value / nullif(d.priced_list_value, 0), 4) AS overall_discount_rate
FROM latest AS l
LEFT JOIN deals AS d ON l.product_id IS NOT DISTINCT FROM d.product_id
WHERE NOT l.is_deleted AND (l.product_id IS NOT NULL OR d.deals > 0);

COMMENT ON VIEW dwh.v_product_performance IS
'One row per live product (product_id, all SCD2 versions together; name, series and list price of the '
'latest version): live deals, won and lost, won value against the list price of the version each deal '
'was engaged under (avg_discount per deal, avg_discount_rate, value-weighted overall_discount_rate).';
