-- View: dwh.v_account_performance
--     Deals of each live customer account: all, open, won and lost live
--     deals, won value, win rate, the mean days to close a won deal, and the
--     first engage and last close dates. Open deals without an account
--     belong to the Unknown account (-1), shown when it has deals.
--     Reads the account summary (dwh.fact_sales_account_summary: one row per
--     account, kept with the monthly aggregate by exact deltas), not the
--     facts: the mean is its sum of days over its count of won deals with
--     both dates, as avg() divides them; the first and last dates are kept
--     there exactly. dwh.v_account_performance_from_facts is the same view
--     over the facts, which it must equal.
-- Tables: reads dwh.fact_sales_account_summary, dwh.dim_account, dwh.dim_date.
CREATE OR REPLACE VIEW dwh.v_account_performance AS
SELECT
    a.account_key,
    a.account_id,
    a.account_name,
    a.sector,
    a.office_location,
    parent.account_name AS parent_account_name,
    coalesce(p.deals, 0)::integer AS deals,
    coalesce(p.open_deals, 0)::integer AS open_deals,
    coalesce(p.won_deals, 0)::integer AS won_deals,
    coalesce(p.lost_deals, 0)::integer AS lost_deals,
    coalesce(p.won_value, 0)::numeric(30, 2) AS won_value,
    round(p.won_deals::numeric / nullif(p.won_deals + p.lost_deals, 0), 4) AS win_rate,
    round(p.won_days::numeric / nullif(p.won_timed_deals, 0)::numeric, 1) AS avg_days_to_close,
    fe.full_date AS first_engage_date,
    lc.full_date AS last_close_date
FROM dwh.dim_account AS a
LEFT JOIN dwh.fact_sales_account_summary AS p ON a.account_key = p.account_key
LEFT JOIN dwh.dim_account AS parent ON a.parent_account_id = parent.account_id
LEFT JOIN dwh.dim_date AS fe ON p.first_engage_key = fe.date_key
LEFT JOIN dwh.dim_date AS lc ON p.last_close_key = lc.date_key
WHERE NOT a.is_deleted AND (a.account_key <> -1 OR p.account_key IS NOT NULL);

COMMENT ON VIEW dwh.v_account_performance IS
'One row per live customer account (and Unknown, -1, for deals without one): live deals, open, won and '
'lost, won value, win rate (0 to 1), mean days to close a won deal, first engage and last close dates. From '
'the account summary.';

COMMENT ON COLUMN dwh.v_account_performance.account_key IS
'Surrogate key of the account; -1 for Unknown (deals without an account), shown only with deals.';
COMMENT ON COLUMN dwh.v_account_performance.account_id IS
'Business key: accounts.account_id in the source; NULL for Unknown.';
COMMENT ON COLUMN dwh.v_account_performance.account_name IS 'Company name.';
COMMENT ON COLUMN dwh.v_account_performance.sector IS 'Industry, as the CRM has it.';
COMMENT ON COLUMN dwh.v_account_performance.office_location IS 'Country of the headquarters.';
COMMENT ON COLUMN dwh.v_account_performance.parent_account_name IS
'Company name of the parent account (by parent_account_id); NULL when there is none.';
COMMENT ON COLUMN dwh.v_account_performance.deals IS
'Live deals of the account, at any stage (open, won or lost); 0 when none.';
COMMENT ON COLUMN dwh.v_account_performance.open_deals IS 'Live deals not yet closed (neither won nor lost).';
COMMENT ON COLUMN dwh.v_account_performance.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.v_account_performance.lost_deals IS 'Live deals lost.';
COMMENT ON COLUMN dwh.v_account_performance.won_value IS
'Sum of the close values of the won deals; 0 when none were won.';
COMMENT ON COLUMN dwh.v_account_performance.win_rate IS
'Win rate: won / (won + lost), 0 to 1, 4 decimals; NULL without closed deals.';
COMMENT ON COLUMN dwh.v_account_performance.avg_days_to_close IS
'Mean days from engage date to close date over the won deals with both dates, 1 decimal; NULL when there are none.';
COMMENT ON COLUMN dwh.v_account_performance.first_engage_date IS
'Earliest engage date of the account''s live deals; NULL when none has one.';
COMMENT ON COLUMN dwh.v_account_performance.last_close_date IS
'Latest close date of the account''s live deals; NULL when none has one.';
