-- Function: dwh.apply_summary_deltas(p_run_id bigint) RETURNS bigint
--     Incremental update, in the aggregate step's transaction (called by
--     dwh.rebuild_monthly_aggregate, before it marks the window applied):
--     adds the pending deltas (refreshed_by_run NULL) of etl.touched_product,
--     etl.touched_account, etl.touched_open_day and etl.touched_duration to
--     their summaries, as
--     the monthly aggregate gets those of etl.touched_group: exact, and
--     proportional to the changes; a group left without live deals loses
--     its row; the groups are then marked with the run for its validation
--     (those of earlier runs are dropped first).
--     An account's first engage and last close dates move by the per-day
--     deltas of etl.touched_account_day: a day before the first (after the
--     last) that gains deals becomes it, with those deals; otherwise the
--     extreme keeps its day while deals remain on it. When the changes take
--     the last deal off an extreme day and add none beyond it, the next day
--     is not known here: that account alone is recounted from its facts
--     (dwh.account_summary_from_facts, through the fact table's account
--     index). etl.touched_account_day is emptied once applied.
--     A warehouse migrated to V0018 (or V0020) after its initial load (live
--     facts, no account summary row, or no stage duration row though closed
--     deals have both dates) gets its summaries built whole instead
--     (dwh.build_summaries), once.
-- Parameters:
--     p_run_id - the incremental run applying its window
-- Returns: the summary groups changed (written or removed).
-- Tables: reads etl.touched_product, etl.touched_account, etl.touched_account_day,
--     etl.touched_open_day, etl.touched_duration, dwh.fact_sales_performance (recounted
--     accounts only); writes dwh.fact_sales_product_summary, dwh.fact_sales_account_summary,
--     dwh.fact_sales_open_pipeline, dwh.deal_stage_duration, etl.touched_product,
--     etl.touched_account, etl.touched_account_day, etl.touched_open_day, etl.touched_duration.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: only dwh.rebuild_monthly_aggregate (a guarded unit) calls it.
CREATE OR REPLACE FUNCTION dwh.apply_summary_deltas(p_run_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_rows bigint;
    v_total bigint := 0;
BEGIN
    -- Groups kept for an earlier run's validation are done with.
    DELETE FROM etl.touched_product AS t WHERE t.refreshed_by_run < p_run_id;
    DELETE FROM etl.touched_account AS t WHERE t.refreshed_by_run < p_run_id;
    DELETE FROM etl.touched_open_day AS t WHERE t.refreshed_by_run < p_run_id;
    DELETE FROM etl.touched_duration AS t WHERE t.refreshed_by_run < p_run_id;

    -- A warehouse loaded before a summary existed (migrated to V0018 after
    -- its initial load; or to V0020, or V0022 emptied the stage durations
    -- V0019 counted from the history) has live facts and an empty summary
    -- that they belong in, a state no run leaves (every live fact counts in
    -- its account's row; every live closed deal with both dates in a
    -- duration). Deltas would start from nothing there: build the summaries
    -- whole from the facts instead, which hold this window already, and keep
    -- the window's groups for the validation's recount as usual.
    IF (NOT EXISTS (SELECT 1 FROM dwh.fact_sales_account_summary)
        AND EXISTS (SELECT 1 FROM dwh.fact_sales_performance AS f WHERE NOT f.is_deleted))
       OR (NOT EXISTS (SELECT 1 FROM dwh.deal_stage_duration)
           AND EXISTS (SELECT 1 FROM dwh.fact_sales_performance AS f
                        WHERE f.is_closed AND NOT f.is_deleted AND f.days_to_close IS NOT NULL
                          AND f.close_month_key <> -1)) THEN
        v_total := dwh.build_summaries(p_run_id);
        UPDATE etl.touched_product SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;
        UPDATE etl.touched_open_day SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;
        UPDATE etl.touched_account SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;
        UPDATE etl.touched_duration SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;
        DELETE FROM etl.touched_account_day;
        RETURN v_total;
    END IF;

    -- Product versions.
    INSERT INTO dwh.fact_sales_product_summary AS s (
        product_key, deals, open_deals, won_deals, lost_deals, won_value, won_list_value,
        won_listed_deals, discounted_deals, discount, discount_rate, priced_won_value, priced_list_value,
        run_id
    )
    SELECT t.product_key, t.deals, t.open_deals, t.won_deals, t.lost_deals, t.won_value, t.won_list_value,
           t.won_listed_deals, t.discounted_deals, t.discount, t.discount_rate, t.priced_won_value,
           t.priced_list_value, p_run_id
      FROM etl.touched_product AS t
     WHERE t.refreshed_by_run IS NULL
    ON CONFLICT (product_key) DO UPDATE
       SET deals = s.deals + excluded.deals,
           open_deals = s.open_deals + excluded.open_deals,
           won_deals = s.won_deals + excluded.won_deals,
           lost_deals = s.lost_deals + excluded.lost_deals,
           won_value = s.won_value + excluded.won_value,
           won_list_value = s.won_list_value + excluded.won_list_value,
           won_listed_deals = s.won_listed_deals + excluded.won_listed_deals,
           discounted_deals = s.discounted_deals + excluded.discounted_deals,
           discount = s.discount + excluded.discount,
           discount_rate = s.discount_rate + excluded.discount_rate,
           priced_won_value = s.priced_won_value + excluded.priced_won_value,
           priced_list_value = s.priced_list_value + excluded.priced_list_value,
           run_id = excluded.run_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;
    DELETE FROM dwh.fact_sales_product_summary AS s
     USING etl.touched_product AS t
     WHERE t.refreshed_by_run IS NULL AND s.product_key = t.product_key AND s.deals = 0;
    UPDATE etl.touched_product SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;

    -- Open pipeline: (stage, engage day).
    INSERT INTO dwh.fact_sales_open_pipeline AS s (deal_stage_key, engage_date_key, open_deals, list_value, run_id)
    SELECT t.deal_stage_key, t.engage_date_key, t.open_deals, t.list_value, p_run_id
      FROM etl.touched_open_day AS t
     WHERE t.refreshed_by_run IS NULL
    ON CONFLICT (deal_stage_key, engage_date_key) DO UPDATE
       SET open_deals = s.open_deals + excluded.open_deals,
           list_value = s.list_value + excluded.list_value,
           run_id = excluded.run_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;
    DELETE FROM dwh.fact_sales_open_pipeline AS s
     USING etl.touched_open_day AS t
     WHERE t.refreshed_by_run IS NULL AND s.deal_stage_key = t.deal_stage_key
       AND s.engage_date_key = t.engage_date_key AND s.open_deals = 0;
    UPDATE etl.touched_open_day SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;

    -- Stage durations: (close month, agent, product, days).
    INSERT INTO dwh.deal_stage_duration AS s (close_month, sales_agent_key, product_id, days, deals)
    SELECT make_date(t.close_month_key / 10000, t.close_month_key / 100 % 100, 1), t.sales_agent_key,
           t.product_id, t.days, t.deals
      FROM etl.touched_duration AS t
     WHERE t.refreshed_by_run IS NULL
    ON CONFLICT (close_month, sales_agent_key, product_id, days) DO UPDATE
       SET deals = s.deals + excluded.deals;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_total := v_total + v_rows;
    DELETE FROM dwh.deal_stage_duration AS s
     USING etl.touched_duration AS t
     WHERE t.refreshed_by_run IS NULL AND s.deals = 0
       AND s.close_month = make_date(t.close_month_key / 10000, t.close_month_key / 100 % 100, 1)
       AND s.sales_agent_key = t.sales_agent_key AND s.product_id = t.product_id AND s.days = t.days;
    UPDATE etl.touched_duration SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;

    -- Accounts: each pending one's new row, computed whole from the old row
    -- and the deltas (the extremes recounted where the deltas cannot tell),
    -- then written, or removed when no live deal is left.
    WITH next AS (
        SELECT t.account_key,
               coalesce(s.deals, 0) + t.deals AS deals,
               coalesce(s.open_deals, 0) + t.open_deals AS open_deals,
               coalesce(s.won_deals, 0) + t.won_deals AS won_deals,
               coalesce(s.lost_deals, 0) + t.lost_deals AS lost_deals,
               coalesce(s.won_value, 0) + t.won_value AS won_value,
               coalesce(s.won_days, 0) + t.won_days AS won_days,
               coalesce(s.won_timed_deals, 0) + t.won_timed_deals AS won_timed_deals,
               CASE WHEN lo.date_key IS NOT NULL THEN lo.date_key
                    WHEN s.first_engage_deals + coalesce(fd.engaged, 0) > 0 THEN s.first_engage_key
               END AS first_engage_key,
               CASE WHEN lo.date_key IS NOT NULL THEN lo.engaged
                    WHEN s.first_engage_deals + coalesce(fd.engaged, 0) > 0
                        THEN s.first_engage_deals + coalesce(fd.engaged, 0)
                    ELSE 0
               END AS first_engage_deals,
               CASE WHEN hi.date_key IS NOT NULL THEN hi.date_key
                    WHEN s.last_close_deals + coalesce(ld.close_dated, 0) > 0 THEN s.last_close_key
               END AS last_close_key,
               CASE WHEN hi.date_key IS NOT NULL THEN hi.close_dated
                    WHEN s.last_close_deals + coalesce(ld.close_dated, 0) > 0
                        THEN s.last_close_deals + coalesce(ld.close_dated, 0)
                    ELSE 0
               END AS last_close_deals,
               -- An extreme day emptied with nothing beyond it: recount.
               coalesce((lo.date_key IS NULL AND s.first_engage_key IS NOT NULL
                         AND s.first_engage_deals + coalesce(fd.engaged, 0) <= 0)
                        OR (hi.date_key IS NULL AND s.last_close_deals + coalesce(ld.close_dated, 0) <= 0),
                        false) AS recount
          FROM etl.touched_account AS t
          LEFT JOIN dwh.fact_sales_account_summary AS s ON s.account_key = t.account_key
          LEFT JOIN etl.touched_account_day AS fd
                 ON fd.account_key = t.account_key AND fd.date_key = s.first_engage_key
          LEFT JOIN etl.touched_account_day AS ld
                 ON ld.account_key = t.account_key AND ld.date_key = s.last_close_key
          LEFT JOIN LATERAL (
              SELECT d.date_key, d.engaged
                FROM etl.touched_account_day AS d
               WHERE d.account_key = t.account_key AND d.engaged > 0 AND d.date_key <> -1
                 AND (s.first_engage_key IS NULL OR d.date_key < s.first_engage_key)
               ORDER BY d.date_key LIMIT 1
          ) AS lo ON true
          LEFT JOIN LATERAL (
              SELECT d.date_key, d.close_dated
                FROM etl.touched_account_day AS d
               WHERE d.account_key = t.account_key AND d.close_dated > 0
                 AND (s.last_close_key IS NULL OR d.date_key > s.last_close_key)
               ORDER BY d.date_key DESC LIMIT 1
          ) AS hi ON true
         WHERE t.refreshed_by_run IS NULL
    ),
    -- A correlated subquery, not a join: its key reaches the view's
    -- groupings as a parameter, so each account is read by the account
    -- index alone (a join would recount every account). MATERIALIZED: the
    -- join below would otherwise run the recount again for every account.
    recounted AS MATERIALIZED (
        SELECT n.account_key,
               (SELECT v FROM dwh.account_summary_from_facts AS v WHERE v.account_key = n.account_key) AS r
          FROM next AS n
         WHERE n.recount AND n.deals > 0
    ),
    gone AS (
        DELETE FROM dwh.fact_sales_account_summary AS s
         USING next AS n
         WHERE n.deals = 0 AND s.account_key = n.account_key
        RETURNING s.account_key
    ),
    written AS (
        INSERT INTO dwh.fact_sales_account_summary AS s (
            account_key, deals, open_deals, won_deals, lost_deals, won_value, won_days, won_timed_deals,
            first_engage_key, first_engage_deals, last_close_key, last_close_deals, run_id
        )
        SELECT n.account_key, n.deals, n.open_deals, n.won_deals, n.lost_deals, n.won_value, n.won_days,
               n.won_timed_deals,
               CASE WHEN n.recount THEN (r.r).first_engage_key ELSE n.first_engage_key END,
               CASE WHEN n.recount THEN (r.r).first_engage_deals ELSE n.first_engage_deals END,
               CASE WHEN n.recount THEN (r.r).last_close_key ELSE n.last_close_key END,
               CASE WHEN n.recount THEN (r.r).last_close_deals ELSE n.last_close_deals END,
               p_run_id
          FROM next AS n
          LEFT JOIN recounted AS r ON r.account_key = n.account_key
         WHERE n.deals > 0
        ON CONFLICT (account_key) DO UPDATE
           SET deals = excluded.deals,
               open_deals = excluded.open_deals,
               won_deals = excluded.won_deals,
               lost_deals = excluded.lost_deals,
               won_value = excluded.won_value,
               won_days = excluded.won_days,
               won_timed_deals = excluded.won_timed_deals,
               first_engage_key = excluded.first_engage_key,
               first_engage_deals = excluded.first_engage_deals,
               last_close_key = excluded.last_close_key,
               last_close_deals = excluded.last_close_deals,
               run_id = excluded.run_id
        RETURNING s.account_key
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written) INTO v_rows;
    v_total := v_total + v_rows;
    UPDATE etl.touched_account SET refreshed_by_run = p_run_id WHERE refreshed_by_run IS NULL;
    DELETE FROM etl.touched_account_day;
    RETURN v_total;
END
$fn$;

COMMENT ON FUNCTION dwh.apply_summary_deltas(bigint) IS
'Incremental update: adds the pending deltas of etl.touched_product, etl.touched_account(_day) and '
'etl.touched_open_day to their summaries (accounts whose extreme day emptied recounted from their facts), '
'removes emptied groups and keeps the groups for the run''s validation; returns the groups changed.';
