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
    sum(a.won_value)::numeric(30, 2) AS won_value,
    round(sum(a.won_deals)::numeric / nullif(sum(a.won_deals + a.lost_deals), 0), 4) AS win_rate,
    round(sum(a.won_value) / nullif(sum(a.won_deals), 0), 2) AS avg_won_value
FROM dwh.fact_sales_monthly_aggregate AS a
INNER JOIN dwh.dim_date AS d ON a.month_date_key = d.date_key
GROUP BY a.month_date_key, d.full_date, d.year, d.quarter, d.month, d.month_name
HAVING sum(a.won_deals + a.lost_deals) > 0;

COMMENT ON VIEW dwh.v_sales_by_month IS
'One row per close month (month_start, its first day; NULL for deals closed without a date): live deals '
'won and lost that month, their won value and win rate (won / closed, 0 to 1). From the monthly aggregate.';

COMMENT ON COLUMN dwh.v_sales_by_month.month_date_key IS
'date_key of the first day of the close month (YYYYMMDD); -1 for deals closed without a close date.';
COMMENT ON COLUMN dwh.v_sales_by_month.month_start IS 'First day of the close month; NULL for the Unknown month (-1).';
COMMENT ON COLUMN dwh.v_sales_by_month.year IS 'Calendar year of the month; 0 for Unknown.';
COMMENT ON COLUMN dwh.v_sales_by_month.quarter IS 'Calendar quarter, 1 to 4; 0 for Unknown.';
COMMENT ON COLUMN dwh.v_sales_by_month.month IS 'Month number, 1 to 12; 0 for Unknown.';
COMMENT ON COLUMN dwh.v_sales_by_month.month_name IS 'English month name, e.g. March; Unknown for -1.';
COMMENT ON COLUMN dwh.v_sales_by_month.won_deals IS 'Live deals won that month, over all agents and products.';
COMMENT ON COLUMN dwh.v_sales_by_month.lost_deals IS 'Live deals lost that month, over all agents and products.';
COMMENT ON COLUMN dwh.v_sales_by_month.closed_deals IS
'won_deals + lost_deals; above 0 (months without closed deals are not listed).';
COMMENT ON COLUMN dwh.v_sales_by_month.won_value IS 'Sum of the close values of the deals won that month.';
COMMENT ON COLUMN dwh.v_sales_by_month.win_rate IS
'Win rate: won / (won + lost), 0 to 1, 4 decimals; NULL without closed deals.';
COMMENT ON COLUMN dwh.v_sales_by_month.avg_won_value IS
'Mean close value of a won deal: won_value / won_deals, 2 decimals; NULL without won deals.';
