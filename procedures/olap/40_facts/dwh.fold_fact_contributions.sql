-- Function: dwh.fold_fact_contributions() RETURNS bigint
--     Folds the current fact batch's contributions (etl.fact_contribution:
--     old facts -1, new facts +1; only live ones count) into the pending
--     deltas of every group they fall in:
--       - etl.touched_group: (close month, agent, product version) of the
--         monthly aggregate, closed deals only;
--       - etl.touched_product: product versions (dwh.fact_sales_product_summary);
--       - etl.touched_account: accounts (dwh.fact_sales_account_summary), its
--         sums and counts; etl.touched_account_day: per account and day, the
--         deals engaged and close-dated that day, from which the apply moves
--         the account's first engage and last close dates;
--       - etl.touched_open_day: (stage, engage day) of the open deals
--         (dwh.fact_sales_open_pipeline);
--       - etl.touched_duration: (close month, agent, product, days to close)
--         of the closed deals with both dates (dwh.deal_stage_duration).
--     A group kept from an earlier run's validation starts from zero again.
--     Exact, and proportional to the changes: no group is recounted from
--     its deals. Every measure is the contribution's sign times what the
--     matching recomputation view (dwh.*_from_facts) sums or counts.
-- Returns: the number of aggregate groups touched.
-- Tables: reads etl.fact_contribution, dwh.dim_product; writes etl.touched_group,
--     etl.touched_product, etl.touched_account, etl.touched_account_day, etl.touched_open_day,
--     etl.touched_duration.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.fold_fact_contributions()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_groups bigint;
BEGIN
    INSERT INTO etl.touched_group AS t (
        month_date_key, sales_agent_key, product_key, won_deals_delta, lost_deals_delta,
        won_value_delta
    )
    SELECT c.month_date_key, c.sales_agent_key, c.product_key,
           coalesce(sum(c.sign) FILTER (WHERE c.is_live AND c.is_closed AND c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_live AND c.is_closed AND NOT c.is_won), 0),
           coalesce(sum(c.sign * c.close_value) FILTER (WHERE c.is_live AND c.is_closed AND c.is_won), 0)
      FROM etl.fact_contribution AS c
     -- every group a changed fact was or is in, with or without a delta
     GROUP BY c.month_date_key, c.sales_agent_key, c.product_key
    ON CONFLICT (month_date_key, sales_agent_key, product_key) DO UPDATE
       SET won_deals_delta = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_deals_delta ELSE 0 END
                             + excluded.won_deals_delta,
           lost_deals_delta = CASE WHEN t.refreshed_by_run IS NULL THEN t.lost_deals_delta ELSE 0 END
                              + excluded.lost_deals_delta,
           won_value_delta = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_value_delta ELSE 0 END
                             + excluded.won_value_delta,
           refreshed_by_run = NULL;
    GET DIAGNOSTICS v_groups = ROW_COUNT;

    INSERT INTO etl.touched_product AS t (
        product_key, deals, open_deals, won_deals, lost_deals, won_value, won_list_value,
        won_listed_deals, discounted_deals, discount, discount_rate, priced_won_value, priced_list_value
    )
    SELECT c.product_key,
           sum(c.sign),
           coalesce(sum(c.sign) FILTER (WHERE NOT c.is_closed), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_closed AND NOT c.is_won), 0),
           coalesce(sum(c.sign * c.close_value) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign * c.list_price) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_won AND c.list_price IS NOT NULL), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_won AND c.list_price > 0 AND c.close_value IS NOT NULL), 0),
           coalesce(sum(c.sign * (c.list_price - c.close_value)) FILTER (WHERE c.is_won AND c.list_price > 0), 0),
           coalesce(sum(c.sign * ((c.list_price - c.close_value) / c.list_price)) FILTER (
               WHERE c.is_won AND c.list_price > 0), 0),
           coalesce(sum(c.sign * c.close_value) FILTER (WHERE c.is_won AND c.list_price > 0), 0),
           coalesce(sum(c.sign * c.list_price) FILTER (WHERE c.is_won AND c.list_price > 0), 0)
      FROM etl.fact_contribution AS c
     WHERE c.is_live
     GROUP BY c.product_key
    ON CONFLICT (product_key) DO UPDATE
       SET deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.deals ELSE 0 END + excluded.deals,
           open_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.open_deals ELSE 0 END
                        + excluded.open_deals,
           won_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_deals ELSE 0 END + excluded.won_deals,
           lost_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.lost_deals ELSE 0 END + excluded.lost_deals,
           won_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_value ELSE 0 END + excluded.won_value,
           won_list_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_list_value ELSE 0 END
                            + excluded.won_list_value,
           won_listed_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_listed_deals ELSE 0 END
                              + excluded.won_listed_deals,
           discounted_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.discounted_deals ELSE 0 END
                              + excluded.discounted_deals,
           discount = CASE WHEN t.refreshed_by_run IS NULL THEN t.discount ELSE 0 END + excluded.discount,
           discount_rate = CASE WHEN t.refreshed_by_run IS NULL THEN t.discount_rate ELSE 0 END
                           + excluded.discount_rate,
           priced_won_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.priced_won_value ELSE 0 END
                              + excluded.priced_won_value,
           priced_list_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.priced_list_value ELSE 0 END
                               + excluded.priced_list_value,
           refreshed_by_run = NULL;

    INSERT INTO etl.touched_account AS t (
        account_key, deals, open_deals, won_deals, lost_deals, won_value, won_days, won_timed_deals
    )
    SELECT c.account_key,
           sum(c.sign),
           coalesce(sum(c.sign) FILTER (WHERE NOT c.is_closed), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_closed AND NOT c.is_won), 0),
           coalesce(sum(c.sign * c.close_value) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign * c.days_to_close) FILTER (WHERE c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_won AND c.days_to_close IS NOT NULL), 0)
      FROM etl.fact_contribution AS c
     WHERE c.is_live
     GROUP BY c.account_key
    ON CONFLICT (account_key) DO UPDATE
       SET deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.deals ELSE 0 END + excluded.deals,
           open_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.open_deals ELSE 0 END
                        + excluded.open_deals,
           won_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_deals ELSE 0 END + excluded.won_deals,
           lost_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.lost_deals ELSE 0 END + excluded.lost_deals,
           won_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_value ELSE 0 END + excluded.won_value,
           won_days = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_days ELSE 0 END + excluded.won_days,
           won_timed_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.won_timed_deals ELSE 0 END
                             + excluded.won_timed_deals,
           refreshed_by_run = NULL;

    -- Pending until applied, then emptied: no run's validation reads it.
    INSERT INTO etl.touched_account_day AS t (account_key, date_key, engaged, close_dated)
    SELECT c.account_key, d.date_key,
           coalesce(sum(c.sign) FILTER (WHERE d.engaged), 0),
           coalesce(sum(c.sign) FILTER (WHERE NOT d.engaged), 0)
      FROM etl.fact_contribution AS c
     CROSS JOIN LATERAL (VALUES (c.engage_date_key, true), (c.close_date_key, false)) AS d (date_key, engaged)
     WHERE c.is_live AND (d.date_key <> -1 OR NOT d.engaged)
     GROUP BY c.account_key, d.date_key
    ON CONFLICT (account_key, date_key) DO UPDATE
       SET engaged = t.engaged + excluded.engaged,
           close_dated = t.close_dated + excluded.close_dated;

    INSERT INTO etl.touched_open_day AS t (deal_stage_key, engage_date_key, open_deals, list_value)
    SELECT c.deal_stage_key, c.engage_date_key, sum(c.sign), coalesce(sum(c.sign * c.list_price), 0)
      FROM etl.fact_contribution AS c
     WHERE c.is_live AND NOT c.is_closed
     GROUP BY c.deal_stage_key, c.engage_date_key
    ON CONFLICT (deal_stage_key, engage_date_key) DO UPDATE
       SET open_deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.open_deals ELSE 0 END
                        + excluded.open_deals,
           list_value = CASE WHEN t.refreshed_by_run IS NULL THEN t.list_value ELSE 0 END
                        + excluded.list_value,
           refreshed_by_run = NULL;
    -- Stage durations: the closed deals with both dates, per close month,
    -- agent, product (business key) and days.
    INSERT INTO etl.touched_duration AS t (close_month_key, sales_agent_key, product_id, days, deals)
    SELECT c.month_date_key, c.sales_agent_key, coalesce(p.product_id, -1), c.days_to_close, sum(c.sign)
      FROM etl.fact_contribution AS c
      JOIN dwh.dim_product AS p ON p.product_key = c.product_key
     WHERE c.is_live AND c.is_closed AND c.days_to_close IS NOT NULL AND c.month_date_key <> -1
     GROUP BY c.month_date_key, c.sales_agent_key, coalesce(p.product_id, -1), c.days_to_close
    ON CONFLICT (close_month_key, sales_agent_key, product_id, days) DO UPDATE
       SET deals = CASE WHEN t.refreshed_by_run IS NULL THEN t.deals ELSE 0 END + excluded.deals,
           refreshed_by_run = NULL;
    RETURN v_groups;
END
$fn$;

COMMENT ON FUNCTION dwh.fold_fact_contributions() IS
'Folds the current fact batch''s contributions (old facts -1, new +1, live ones only) into the pending deltas '
'of the monthly aggregate (etl.touched_group) and of every summary (etl.touched_*); returns the aggregate '
'groups touched.';
