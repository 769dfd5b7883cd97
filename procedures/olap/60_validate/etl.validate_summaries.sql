-- Function: etl.validate_summaries(p_run_id bigint, p_incremental boolean) RETURNS void
--     Part of etl.validate (issue 13): records in etl.validation_result that
--     each summary (dwh.fact_sales_product_summary, dwh.fact_sales_account_summary,
--     dwh.fact_sales_open_pipeline, dwh.deal_stage_duration) equals its
--     recomputation from the facts (dwh.product_summary_from_facts,
--     dwh.account_summary_from_facts, dwh.open_pipeline_from_facts,
--     dwh.stage_duration_from_facts):
--       - initial load: whole, every group from both sides;
--       - incremental: the groups the run refreshed (kept in etl.touched_product,
--         etl.touched_account, etl.touched_open_day with its run), each
--         recounted from its own deals (the filter reaches the facts' indexes;
--         stage durations by (close month, agent, product), etl.touched_duration),
--         at most validation_sample_groups of them spread by a hash of their
--         keys, among those of at most validation_recount_deals /
--         validation_sample_groups live deals, so the cost stays bounded
--         however large the groups grow;
--     and, both ways, that the summaries agree with each other and with the
--     monthly aggregate, whole, from their own rows (won, lost and won value
--     per product version; totals of deals, open, won, lost and won value):
--     cheap, and it covers the groups too large for the recount (a product
--     version at scale).
-- Parameters:
--     p_run_id      - the run being validated
--     p_incremental - true for an incremental run
-- Tables: reads dwh.fact_sales_*_summary, dwh.fact_sales_open_pipeline, dwh.deal_stage_duration,
--     dwh.fact_sales_monthly_aggregate, dwh.fact_sales_performance, etl.touched_*,
--     etl.config; writes etl.validation_result.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: only etl.validate calls it.
CREATE OR REPLACE FUNCTION etl.validate_summaries(p_run_id bigint, p_incremental boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_sample integer := etl.config_value('validation_sample_groups')::integer;
    v_products integer [];
    v_summary record;
    v_keys text;
    v_stored text;
    v_recomputed text;
    v_recount_group bigint := etl.config_value('validation_recount_deals')::bigint
                              / greatest(etl.config_value('validation_sample_groups')::integer, 1);
BEGIN
    IF NOT p_incremental THEN
        -- Each summary whole against its recomputation, one statement
        -- shape for all: (check, table, recomputation, key columns, measure
        -- columns).
        FOR v_summary IN
            SELECT *
              FROM (VALUES
                  ('product summary', 'dwh.fact_sales_product_summary', 'dwh.product_summary_from_facts',
                   'product_key',
                   'deals, open_deals, won_deals, lost_deals, won_value, won_list_value, won_listed_deals, '
                   || 'discounted_deals, discount, discount_rate, priced_won_value, priced_list_value'),
                  ('account summary', 'dwh.fact_sales_account_summary', 'dwh.account_summary_from_facts',
                   'account_key',
                   'deals, open_deals, won_deals, lost_deals, won_value, won_days, won_timed_deals, '
                   || 'first_engage_key, first_engage_deals, last_close_key, last_close_deals'),
                  ('open pipeline summary', 'dwh.fact_sales_open_pipeline', 'dwh.open_pipeline_from_facts',
                   'deal_stage_key, engage_date_key', 'open_deals, list_value'),
                  ('stage duration summary', 'dwh.deal_stage_duration', 'dwh.stage_duration_from_facts',
                   'close_month, sales_agent_key, product_id, days', 'deals')
              ) AS v (summary, stored, recomputation, keys, measures)
        LOOP
            SELECT string_agg(format('%L, %I', k, k), ', ') INTO v_keys
              FROM unnest(string_to_array(replace(v_summary.keys, ' ', ''), ',')) AS k;
            SELECT string_agg('t.' || quote_ident(m), ', '), string_agg('r.' || quote_ident(m), ', ')
              INTO v_stored, v_recomputed
              FROM unnest(string_to_array(replace(v_summary.measures, ' ', ''), ',')) AS m;
            EXECUTE format($q$
                INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
                SELECT $1, %L, c.differing = 0, '0 differing groups', c.differing::text || ' differing groups',
                       c.sample
                  FROM (SELECT count(*) AS differing, jsonb_agg(jsonb_build_object(%s)) AS sample
                          FROM %s AS t
                          FULL JOIN %s AS r USING (%s)
                         WHERE (%s) IS DISTINCT FROM (%s)) AS c
                $q$, v_summary.summary || ' equals its recomputation from the facts', v_keys,
                v_summary.stored, v_summary.recomputation, v_summary.keys, v_stored, v_recomputed)
            USING p_run_id;
        END LOOP;
    ELSE

        -- Product versions: the sampled keys first, then their recount as a
        -- query of its own (EXECUTE ... USING) so the planner sees the keys:
        -- a new version's few deals are then read through the agents and
        -- the facts' (sales_agent_key, product_key, ...) index, where a
        -- generic plan guesses a seventh of the facts and reads them all.
        SELECT coalesce(array_agg(k.product_key), '{}') INTO v_products
          FROM (SELECT t.product_key
                  FROM etl.touched_product AS t
                  LEFT JOIN dwh.fact_sales_product_summary AS s ON s.product_key = t.product_key
                 WHERE t.refreshed_by_run = p_run_id AND coalesce(s.deals, 0) <= v_recount_group
                 ORDER BY hashtext(t.product_key::text)
                 LIMIT v_sample) AS k;
        EXECUTE $q$
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT $1, 'refreshed product summary groups equal their recomputation from the facts',
               c.differing = 0, '0 differing of ' || c.groups || ' checked',
               c.differing::text || ' differing', c.sample
          FROM (SELECT count(*) AS groups,
                       count(*) FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS differing,
                       jsonb_agg(jsonb_build_object('product_key', x.product_key))
                           FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS sample
                  FROM (SELECT k.product_key,
                               CASE WHEN s.product_key IS NOT NULL THEN
                                   (s.deals, s.open_deals, s.won_deals, s.lost_deals, s.won_value, s.won_list_value,
                                    s.won_listed_deals, s.discounted_deals, s.discount, s.discount_rate,
                                    s.priced_won_value, s.priced_list_value)
                               END AS stored,
                               CASE WHEN r.product_key IS NOT NULL THEN
                                   (r.deals, r.open_deals, r.won_deals, r.lost_deals, r.won_value, r.won_list_value,
                                    r.won_listed_deals, r.discounted_deals, r.discount, r.discount_rate,
                                    r.priced_won_value, r.priced_list_value)
                               END AS recomputed
                          FROM unnest($2::integer []) AS k (product_key)
                          LEFT JOIN dwh.fact_sales_product_summary AS s ON s.product_key = k.product_key
                          LEFT JOIN (SELECT v.*
                                       FROM dwh.product_summary_from_facts AS v
                                      WHERE v.product_key = ANY($2::integer [])) AS r
                                 ON r.product_key = k.product_key) AS x) AS c
        $q$ USING p_run_id, v_products;

        -- Accounts, open pipeline days and stage durations: each side a
        -- correlated subquery of one value (a jsonb or an array: on Citus a
        -- worker returns no anonymous row), which reads the group's own facts
        -- through their index.
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'refreshed account summary groups equal their recomputation from the facts',
               c.differing = 0, '0 differing of ' || c.groups || ' checked',
               c.differing::text || ' differing', c.sample
          FROM (SELECT count(*) AS groups,
                       count(*) FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS differing,
                       jsonb_agg(jsonb_build_object('account_key', x.account_key))
                           FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS sample
                  FROM (SELECT t.account_key,
                               (SELECT jsonb_build_array(s.deals, s.open_deals, s.won_deals, s.lost_deals, s.won_value,
                                        s.won_days, s.won_timed_deals,
                                        s.first_engage_key,
                                        s.first_engage_deals,
                                        s.last_close_key,
                                        s.last_close_deals)
                                  FROM dwh.fact_sales_account_summary AS s
                                 WHERE s.account_key = t.account_key) AS stored,
                               (SELECT jsonb_build_array(r.deals, r.open_deals, r.won_deals, r.lost_deals, r.won_value,
                                        r.won_days, r.won_timed_deals,
                                        r.first_engage_key,
                                        r.first_engage_deals,
                                        r.last_close_key,
                                        r.last_close_deals)
                                  FROM dwh.account_summary_from_facts AS r
                                 WHERE r.account_key = t.account_key) AS recomputed
                          FROM etl.touched_account AS t
                         WHERE t.refreshed_by_run = p_run_id
                           AND coalesce((SELECT s.deals FROM dwh.fact_sales_account_summary AS s WHERE s.account_key = t.account_key), 0)
                               <= v_recount_group
                         ORDER BY hashtext(t.account_key::text)
                         LIMIT v_sample) AS x) AS c;

        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'refreshed open pipeline summary groups equal their recomputation from the facts',
               c.differing = 0, '0 differing of ' || c.groups || ' checked',
               c.differing::text || ' differing', c.sample
          FROM (SELECT count(*) AS groups,
                       count(*) FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS differing,
                       jsonb_agg(jsonb_build_object('deal_stage_key', x.deal_stage_key, 'engage_date_key', x.engage_date_key))
                           FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS sample
                  FROM (SELECT t.deal_stage_key, t.engage_date_key,
                               (SELECT jsonb_build_array(s.open_deals, s.list_value)
                                  FROM dwh.fact_sales_open_pipeline AS s
                                 WHERE s.deal_stage_key = t.deal_stage_key AND s.engage_date_key = t.engage_date_key) AS stored,
                               (SELECT jsonb_build_array(r.open_deals, r.list_value)
                                  FROM dwh.open_pipeline_from_facts AS r
                                 WHERE r.deal_stage_key = t.deal_stage_key AND r.engage_date_key = t.engage_date_key) AS recomputed
                          FROM etl.touched_open_day AS t
                         WHERE t.refreshed_by_run = p_run_id
                           AND coalesce((SELECT s.open_deals FROM dwh.fact_sales_open_pipeline AS s WHERE s.deal_stage_key = t.deal_stage_key AND s.engage_date_key = t.engage_date_key), 0)
                               <= v_recount_group
                         ORDER BY hashtext(t.deal_stage_key || ':' || t.engage_date_key)
                         LIMIT v_sample) AS x) AS c;

        -- Stage durations: a sample of the touched (close month, agent,
        -- product) groups, each recounted from its deals (what
        -- dwh.stage_duration_from_facts counts, for one group): the
        -- product's versions go in as a key array, so the facts'
        -- (sales_agent_key, product_key, close_month_key) index gives the
        -- group's deals alone. Through the view, the planner joined the
        -- versions afterwards and read every deal of the agent's month: 1.35 s
        -- for 50 groups at scale 1000.
        -- (The sample first, as a CTE, then each side joined with it and
        -- grouped: on Citus a correlated subquery may not hold the recount's
        -- own grouping. Joined by nested loops, so that each group's deals come
        -- through the facts' (sales_agent_key, product_key, close_month_key)
        -- index: the planner, which cannot tell how few groups there are,
        -- otherwise hashes every fact: 218 ms against 5 ms at scale 100.)
        PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
        WITH sampled AS MATERIALIZED (
            SELECT g.close_month_key, g.sales_agent_key, g.product_id, g.product_keys
              FROM (SELECT DISTINCT t.close_month_key, t.sales_agent_key, t.product_id,
                           coalesce(k.product_keys, '{}') AS product_keys
                      FROM etl.touched_duration AS t
                      LEFT JOIN (SELECT coalesce(p.product_id, -1) AS product_id,
                                        array_agg(p.product_key) AS product_keys
                                   FROM dwh.dim_product AS p GROUP BY 1) AS k
                             ON k.product_id = t.product_id
                     WHERE t.refreshed_by_run = p_run_id) AS g
             WHERE coalesce((SELECT sum(d.deals)
                               FROM dwh.deal_stage_duration AS d
                              WHERE d.close_month = make_date(g.close_month_key / 10000,
                                                              g.close_month_key / 100 % 100, 1)
                                AND d.sales_agent_key = g.sales_agent_key
                                AND d.product_id = g.product_id), 0) <= v_recount_group
             ORDER BY hashtext(g.close_month_key || ':' || g.sales_agent_key || ':' || g.product_id)
             LIMIT v_sample
        ),
        stored AS (
            SELECT g.close_month_key, g.sales_agent_key, g.product_id,
                   array_agg(ARRAY[d.days, d.deals] ORDER BY d.days) AS days
              FROM sampled AS g
              JOIN dwh.deal_stage_duration AS d
                ON d.close_month = make_date(g.close_month_key / 10000, g.close_month_key / 100 % 100, 1)
               AND d.sales_agent_key = g.sales_agent_key AND d.product_id = g.product_id
             GROUP BY 1, 2, 3
        ),
        recounted AS (
            SELECT v.close_month_key, v.sales_agent_key, v.product_id,
                   array_agg(ARRAY[v.days, v.deals] ORDER BY v.days) AS days
              FROM (SELECT g.close_month_key, g.sales_agent_key, g.product_id, f.days_to_close AS days,
                           count(*)::integer AS deals
                      FROM sampled AS g
                      JOIN dwh.fact_sales_performance AS f
                        ON f.sales_agent_key = g.sales_agent_key AND f.product_key = ANY (g.product_keys)
                       AND f.close_month_key = g.close_month_key
                     WHERE f.is_closed AND NOT f.is_deleted AND f.days_to_close IS NOT NULL
                     GROUP BY 1, 2, 3, 4) AS v
             GROUP BY 1, 2, 3
        )
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'refreshed stage duration summary groups equal their recomputation from the facts',
               c.differing = 0, '0 differing of ' || c.groups || ' checked',
               c.differing::text || ' differing', c.sample
          FROM (SELECT count(*) AS groups,
                       count(*) FILTER (WHERE x.differs) AS differing,
                       jsonb_agg(jsonb_build_object('close_month_key', x.close_month_key,
                                                    'sales_agent_key', x.sales_agent_key,
                                                    'product_id', x.product_id))
                           FILTER (WHERE x.differs) AS sample
                  FROM (SELECT g.close_month_key, g.sales_agent_key, g.product_id,
                               s.days IS DISTINCT FROM r.days AS differs
                          FROM sampled AS g
                          LEFT JOIN stored AS s USING (close_month_key, sales_agent_key, product_id)
                          LEFT JOIN recounted AS r USING (close_month_key, sales_agent_key, product_id)
                       ) AS x) AS c;
        PERFORM set_config('enable_hashjoin', 'on', true), set_config('enable_mergejoin', 'on', true);
    END IF;

    -- The summaries against each other and the monthly aggregate, whole:
    -- cheap (their rows, not the facts), and it covers the groups too
    -- large for the recount above (a product version at scale).
    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'summaries agree with each other and with the monthly aggregate',
           c.problems = 0, '0', c.problems::text, c.details
      FROM (SELECT count(*) AS problems, jsonb_agg(d.what) AS details
              FROM (SELECT jsonb_build_object('product_key', coalesce(p.product_key, m.product_key),
                                              'product summary', to_jsonb(p), 'aggregate', to_jsonb(m)) AS what
                      FROM (SELECT s.product_key, s.won_deals, s.lost_deals, s.won_value
                              FROM dwh.fact_sales_product_summary AS s
                             WHERE s.won_deals + s.lost_deals > 0) AS p
                      FULL JOIN (SELECT a.product_key, sum(a.won_deals)::integer AS won_deals,
                                        sum(a.lost_deals)::integer AS lost_deals, sum(a.won_value) AS won_value
                                   FROM dwh.fact_sales_monthly_aggregate AS a
                                  GROUP BY a.product_key) AS m ON m.product_key = p.product_key
                     WHERE (p.won_deals, p.lost_deals, p.won_value)
                           IS DISTINCT FROM (m.won_deals, m.lost_deals, m.won_value)
                    UNION ALL
                    SELECT jsonb_build_object('products', to_jsonb(p), 'accounts', to_jsonb(a),
                                              'open pipeline', o.open_deals)
                      FROM (SELECT coalesce(sum(s.deals), 0) AS deals, coalesce(sum(s.open_deals), 0) AS open_deals,
                                   coalesce(sum(s.won_deals), 0) AS won_deals, coalesce(sum(s.lost_deals), 0) AS lost_deals,
                                   coalesce(sum(s.won_value), 0) AS won_value
                              FROM dwh.fact_sales_product_summary AS s) AS p
                     CROSS JOIN (SELECT coalesce(sum(s.deals), 0) AS deals, coalesce(sum(s.open_deals), 0) AS open_deals,
                                        coalesce(sum(s.won_deals), 0) AS won_deals, coalesce(sum(s.lost_deals), 0) AS lost_deals,
                                        coalesce(sum(s.won_value), 0) AS won_value
                                   FROM dwh.fact_sales_account_summary AS s) AS a
                     CROSS JOIN (SELECT coalesce(sum(s.open_deals), 0) AS open_deals
                                   FROM dwh.fact_sales_open_pipeline AS s) AS o
                     WHERE (p.deals, p.open_deals, p.won_deals, p.lost_deals, p.won_value)
                           IS DISTINCT FROM (a.deals, a.open_deals, a.won_deals, a.lost_deals, a.won_value)
                        OR p.open_deals IS DISTINCT FROM o.open_deals) AS d) AS c;
END
$fn$;

COMMENT ON FUNCTION etl.validate_summaries(bigint, boolean) IS
'Part of etl.validate: each summary against its recomputation from the facts (whole on an initial load, a '
'bounded sample of the refreshed groups on an incremental run), and the summaries against each other and the '
'monthly aggregate.';
