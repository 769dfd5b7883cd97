-- View: dwh.v_sales_by_month
--     Sales by close month: deals won and lost, won value and win rate, one
--     row per month in which a live deal closed. Reads the monthly
--     aggregate (already over closed, live deals only), so it costs a scan
--     of the aggregate, not of the facts. Deals closed without a close date
--     (a soft data-quality rule) fall in the Unknown month (key -1, no date).
-- Columns:
--     win_rate - won / (won + lost), a fraction from 0 to 1
-- Tables: reads dwh.fact_sales_monthly_aggregate, dwh.dim_date.
CREATE OR REPLACE VIEW dwh.v_sales_by_month AS
SELECT
    a.month_date_key,
    d.full_date AS month_start,
    d.year,
    d.quarter,
    d.month,
    d.month_name,
    sum(a.won_deals)::integer AS won_deals,
    sum(a.lost_deals)::integer AS lost_deals,
    sum(a.won_deals + a.lost_deals)::integer AS closed_deals,
    sum(a.won_value)::numeric(18, 2) AS won_value,
    round(sum(a.won_deals)::numeric / nullif(sum(a.won_deals + a.lost_deals), 0), 4) AS win_rate,
    round(sum(a.won_value) / nullif(sum(a.won_deals), 0), 2) AS avg_won_value
FROM dwh.fact_sales_monthly_aggregate AS a
INNER JOIN dwh.dim_date AS d ON a.month_date_key = d.date_key
GROUP BY a.month_date_key, d.full_date, d.year, d.quarter, d.month, d.month_name
HAVING sum(a.won_deals + a.lost_deals) > 0;

COMMENT ON VIEW dwh.v_sales_by_month IS
'One row per close month (month_start, its first day; NULL for deals closed without a date): live deals '
'won and lost that month, their won value and win rate (won / closed, 0 to 1). From the monthly aggregate.';
