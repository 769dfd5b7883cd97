-- View: dwh.v_product_performance
--     Performance of each product across all its SCD2 versions (by
--     product_id), named as its latest version: deals won and lost, won
--     value, and what the won deals were worth at list price, each deal
--     priced by the version in effect at its engage date (the fact's
--     list_price). Live deals only. Reads the product summary
--     (dwh.fact_sales_product_summary: one row per product version, kept
--     with the monthly aggregate by exact deltas), not the facts: means are
--     its sums over its counts, and a sum over no value is NULL, as sum()
--     gives it, where the summary counts none (won_listed_deals,
--     discounted_deals). dwh.v_product_performance_from_facts is the same
--     view over the facts, which it must equal.
-- Columns:
--     won_list_value       - sum of the list prices of the won deals
--     avg_discount         - mean over won deals with a list price of
--                            (list price - close value); negative: above list
--     avg_discount_rate    - mean of (list price - close value) / list price
--     overall_discount_rate - 1 - won value / won list value (value-weighted)
-- Tables: reads dwh.fact_sales_product_summary, dwh.dim_product.
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
        sum(b.deals) AS deals,
        sum(b.open_deals) AS open_deals,
        sum(b.won_deals) AS won_deals,
        sum(b.lost_deals) AS lost_deals,
        coalesce(sum(b.won_value), 0) AS won_value,
        CASE WHEN sum(b.won_listed_deals) > 0 THEN sum(b.won_list_value) END AS won_list_value,
        sum(b.discount) / nullif(sum(b.discounted_deals), 0)::numeric AS avg_discount,
        sum(b.discount_rate) / nullif(sum(b.discounted_deals), 0)::numeric AS avg_discount_rate,
        CASE WHEN sum(b.discounted_deals) > 0 THEN sum(b.priced_won_value) END AS priced_won_value,
        sum(b.priced_list_value) AS priced_list_value
    FROM dwh.fact_sales_product_summary AS b
    INNER JOIN versions AS v ON b.product_key = v.product_key
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
    coalesce(d.won_value, 0)::numeric(30, 2) AS won_value,
    round(d.won_deals::numeric / nullif(d.won_deals + d.lost_deals, 0)::numeric, 4) AS win_rate,
    round(d.won_list_value, 2) AS won_list_value,
    round(d.avg_discount, 2) AS avg_discount,
    round(d.avg_discount_rate, 4) AS avg_discount_rate,
    round(1 - d.priced_won_value / nullif(d.priced_list_value, 0), 4) AS overall_discount_rate
FROM latest AS l
LEFT JOIN deals AS d ON l.product_id IS NOT DISTINCT FROM d.product_id
WHERE NOT l.is_deleted AND (l.product_id IS NOT NULL OR d.deals > 0);

COMMENT ON VIEW dwh.v_product_performance IS
'One row per live product (product_id, all SCD2 versions together; name, series and list price of the '
'latest version): live deals, won and lost, won value against the list price of the version each deal '
'was engaged under (avg_discount per deal, avg_discount_rate, value-weighted overall_discount_rate). From the '
'product summary.';

COMMENT ON COLUMN dwh.v_product_performance.product_id IS
'Business key: products.product_id in the source, shared by all versions; NULL for Unknown, shown only with deals.';
COMMENT ON COLUMN dwh.v_product_performance.product_name IS 'Product name of the latest version.';
COMMENT ON COLUMN dwh.v_product_performance.series IS 'Product series of the latest version.';
COMMENT ON COLUMN dwh.v_product_performance.current_list_price IS 'List price of the latest version (its sales_price).';
COMMENT ON COLUMN dwh.v_product_performance.versions IS
'Number of SCD2 versions of the product in dwh.dim_product; 1 when it has no live deals.';
COMMENT ON COLUMN dwh.v_product_performance.deals IS 'Live deals of the product, any version and stage; 0 when none.';
COMMENT ON COLUMN dwh.v_product_performance.open_deals IS 'Live deals not yet closed (neither won nor lost).';
COMMENT ON COLUMN dwh.v_product_performance.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.v_product_performance.lost_deals IS 'Live deals lost.';
COMMENT ON COLUMN dwh.v_product_performance.won_value IS
'Sum of the close values of the won deals; 0 when none were won.';
COMMENT ON COLUMN dwh.v_product_performance.win_rate IS
'Win rate: won / (won + lost), 0 to 1, 4 decimals; NULL without closed deals.';
COMMENT ON COLUMN dwh.v_product_performance.won_list_value IS
'Sum of the list prices of the won deals, each at the version it was engaged under; NULL without won deals.';
COMMENT ON COLUMN dwh.v_product_performance.avg_discount IS
'Mean of (list price - close value) over won deals with a list price above 0, 2 decimals; negative: sold above list.';
COMMENT ON COLUMN dwh.v_product_performance.avg_discount_rate IS
'Mean of (list price - close value) / list price over the same won deals, 4 decimals (0.1: 10% below list).';
COMMENT ON COLUMN dwh.v_product_performance.overall_discount_rate IS
'1 - (sum of close values / sum of list prices) over the same won deals: value-weighted, 4 decimals.';
