-- Function: dwh.fold_fact_contributions() RETURNS bigint
--     Folds the current fact batch's contributions (etl.fact_contribution:
--     old facts -1, new facts +1; only closed ones count) into the pending
--     deltas of their aggregate groups in etl.touched_group. A group kept
--     from an earlier run's validation starts from zero again. Exact, and
--     proportional to the changes: no group is recounted from its deals.
-- Returns: the number of groups touched.
-- Tables: reads etl.fact_contribution; writes etl.touched_group.
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
           coalesce(sum(c.sign) FILTER (WHERE c.is_closed AND c.is_won), 0),
           coalesce(sum(c.sign) FILTER (WHERE c.is_closed AND NOT c.is_won), 0),
           coalesce(sum(c.sign * c.close_value) FILTER (WHERE c.is_closed AND c.is_won), 0)
      FROM etl.fact_contribution AS c
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
    RETURN v_groups;
END
$fn$;

COMMENT ON FUNCTION dwh.fold_fact_contributions() IS
'Folds the current fact batch''s contributions (old facts -1, new +1, closed deals only) into the '
'pending aggregate deltas of etl.touched_group; returns the groups touched.';
