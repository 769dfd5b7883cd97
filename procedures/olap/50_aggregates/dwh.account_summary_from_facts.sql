-- View: dwh.account_summary_from_facts
--     dwh.fact_sales_account_summary computed from the fact table: one row
--     per account with live deals, its sums, counts, first engage and last
--     close date keys, and the live deals on each of those days. The
--     extremes come first (one grouping of the facts), the deals on them
--     from a second join to the facts on the account; a filter on
--     account_key reaches both through the fact table's account index, so
--     one account is recounted from its own deals only (the aggregate step
--     does that when an account's extreme day loses its last deal).
-- Tables: reads dwh.fact_sales_performance (both parts, hot and cold).
CREATE OR REPLACE VIEW dwh.account_summary_from_facts AS
SELECT
    s.account_key,
    -- one row of s per account: min() passes its columns through, so the
    -- grouping is by the account alone (hashed, not sorted on every column)
    min(s.deals) AS deals,
    min(s.open_deals) AS open_deals,
    min(s.won_deals) AS won_deals,
    min(s.lost_deals) AS lost_deals,
    min(s.won_value)::numeric(30, 2) AS won_value,
    min(s.won_days) AS won_days,
    min(s.won_timed_deals) AS won_timed_deals,
    min(s.first_engage_key) AS first_engage_key,
    (count(*) FILTER (WHERE f.engage_date_key = s.first_engage_key))::integer AS first_engage_deals,
    min(s.last_close_key) AS last_close_key,
    (count(*) FILTER (WHERE f.close_date_key = s.last_close_key))::integer AS last_close_deals
FROM (
    SELECT
        a.account_key,
        count(*)::integer AS deals,
        (count(*) FILTER (WHERE NOT a.is_closed))::integer AS open_deals,
        (count(*) FILTER (WHERE a.is_won))::integer AS won_deals,
        (count(*) FILTER (WHERE a.is_closed AND NOT a.is_won))::integer AS lost_deals,
        coalesce(sum(a.close_value) FILTER (WHERE a.is_won), 0)::numeric(30, 2) AS won_value,
        coalesce(sum(a.days_to_close) FILTER (WHERE a.is_won), 0)::bigint AS won_days,
        (count(a.days_to_close) FILTER (WHERE a.is_won))::integer AS won_timed_deals,
        min(a.engage_date_key) FILTER (WHERE a.engage_date_key <> -1) AS first_engage_key,
        max(a.close_date_key) AS last_close_key
    FROM dwh.fact_sales_performance AS a
    WHERE NOT a.is_deleted
    GROUP BY a.account_key
) AS s
INNER JOIN dwh.fact_sales_performance AS f
    ON
        s.account_key = f.account_key
        AND NOT f.is_deleted
        AND (s.first_engage_key = f.engage_date_key OR s.last_close_key = f.close_date_key)
GROUP BY s.account_key;

COMMENT ON VIEW dwh.account_summary_from_facts IS
'dwh.fact_sales_account_summary recomputed from the facts: what the table must equal.';

COMMENT ON COLUMN dwh.account_summary_from_facts.account_key IS 'The account; -1 for Unknown.';
COMMENT ON COLUMN dwh.account_summary_from_facts.deals IS 'Live deals, any stage.';
COMMENT ON COLUMN dwh.account_summary_from_facts.open_deals IS 'Live deals not closed.';
COMMENT ON COLUMN dwh.account_summary_from_facts.won_deals IS 'Live deals won.';
COMMENT ON COLUMN dwh.account_summary_from_facts.lost_deals IS 'Live deals lost.';
COMMENT ON COLUMN dwh.account_summary_from_facts.won_value IS 'Sum of the close values of the won deals.';
COMMENT ON COLUMN dwh.account_summary_from_facts.won_days IS 'Sum of days_to_close over the won deals.';
COMMENT ON COLUMN dwh.account_summary_from_facts.won_timed_deals IS 'Won deals with days_to_close.';
COMMENT ON COLUMN dwh.account_summary_from_facts.first_engage_key IS
'Earliest engage date key of the live deals (-1 left out); NULL when none.';
COMMENT ON COLUMN dwh.account_summary_from_facts.first_engage_deals IS 'Live deals engaged on first_engage_key.';
COMMENT ON COLUMN dwh.account_summary_from_facts.last_close_key IS 'Latest close date key of the live deals.';
COMMENT ON COLUMN dwh.account_summary_from_facts.last_close_deals IS
'Live deals whose close date key is last_close_key.';
