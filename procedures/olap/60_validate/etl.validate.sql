-- Function: etl.validate(p_run_id bigint) RETURNS SETOF etl.validation_result
--     Checks the warehouse after a run, records every check in
--     etl.validation_result and returns those rows:
--       - every staged source row was loaded or quarantined (initial load);
--       - per deal stage, source rows and close values (in cents, as stored)
--         reconcile with the facts (initial load: the staged source is the
--         run's snapshot); a source stage counts as the stage it resolves to
--         (by name, else trimmed and case-folded: dwh.deal_stage_match_key),
--         Unknown (-1) when it resolves to none;
--       - dimensions hold every staged account, agent and product;
--       - every fact key resolves to a dimension row (initial load: by
--         validating the foreign keys the load put back NOT VALID;
--         incremental: the facts of the window's deals);
--       - SCD2: one current version per live product, none overlapping;
--       - the monthly aggregate equals its recomputation from the facts
--         (incremental: a bounded sample of the groups the run refreshed);
--       - each summary equals its recomputation from the facts, and the
--         summaries agree with each other and the monthly aggregate
--         (etl.validate_summaries);
--       - incremental: every deal the window changed is a live fact as the
--         source has it (in sales_pipeline or archived, with when; its stage
--         resolved as above, a date outside date_min .. date_max as Unknown),
--         a quarantined record, or a fact marked deleted;
--       - incremental: the deal history's current row of every deal the
--         window changed agrees with its fact (etl.check_deal_history);
--       - the deal history's as-of summaries add up to the open pipeline,
--         their months to their days (incremental: the window's months), and
--         their stage conversions to no more than the entries
--         (etl.check_history_summaries: from summary rows only);
--       - incremental: no deal engaged in the period of a product version the
--         run opened is left on another version of the product
--         (dwh.facts_off_their_version: the deals engaged since its window's
--         changes, by index);
--       - one fact per opportunity across the facts' hot and cold parts, each
--         in the part the horizon places it (etl.check_fact_storage:
--         incremental, the window's deals). A horizon move is checked for
--         this alone: it changes nothing else.
--     Incremental checks read only what the window touched (and summary
--     totals): their cost follows the changes, not the size of the warehouse.
-- Parameters:
--     p_run_id - the run to validate
-- Tables: reads etl.stage_*, dwh.*, etl.error_log; writes etl.validation_result;
--     validates the NOT VALID foreign keys of dwh tables.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.validate(p_run_id bigint)
RETURNS SETOF etl.validation_result
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_pipeline text;
    v_fk record;
    v_validated integer := 0;
    v_broken jsonb := '[]';
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_sample_groups integer := etl.config_value('validation_sample_groups')::integer;
BEGIN
    SELECT r.pipeline INTO v_pipeline FROM etl.run AS r WHERE r.run_id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = '22023';
    END IF;
    DELETE FROM etl.validation_result WHERE run_id = p_run_id;

    IF v_pipeline = 'horizon_move' THEN
        -- A move changes where facts are stored, nothing else.
        PERFORM etl.check_fact_storage(p_run_id, false);
        RETURN QUERY SELECT * FROM etl.validation_result AS v WHERE v.run_id = p_run_id
                      ORDER BY v.validation_id;
        RETURN;
    END IF;

    IF v_pipeline = 'initial_load' THEN
        -- Every staged opportunity is a fact or a quarantined record.
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'every source row is loaded or quarantined',
               c.staged = c.loaded + c.quarantined, c.staged::text,
               (c.loaded + c.quarantined)::text,
               jsonb_build_object('loaded', c.loaded, 'quarantined', c.quarantined)
          FROM (SELECT (SELECT count(*) FROM etl.stage_sales_pipeline) AS staged,
                       (SELECT count(*) FROM dwh.fact_sales_performance) AS loaded,
                       (SELECT count(DISTINCT e.business_key) FROM etl.error_log AS e
                         WHERE e.run_id = p_run_id AND e.kind = 'quarantine'
                           AND e.table_name = 'sales_pipeline') AS quarantined) AS c;

        -- Per deal stage: rows and close values, source (less quarantine) against facts.
        -- (The quarantined keys, a local table's rows, meet the staging through a
        -- materialised CTE: Citus joins a distributed table with a local one only so.)
        WITH quarantined AS MATERIALIZED (
            SELECT DISTINCT e.business_key FROM etl.error_log AS e
             WHERE e.run_id = p_run_id AND e.kind = 'quarantine' AND e.table_name = 'sales_pipeline'
        )
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'deal stages reconcile with the source (rows and close values)',
               coalesce(bool_and(s.rows IS NOT DISTINCT FROM f.rows
                                 AND s.value IS NOT DISTINCT FROM f.value), true),
               coalesce(sum(s.rows), 0)::text || ' rows, ' || coalesce(sum(s.value), 0)::text,
               coalesce(sum(f.rows), 0)::text || ' rows, ' || coalesce(sum(f.value), 0)::text,
               coalesce(jsonb_agg(jsonb_build_object(
                   'deal_stage', coalesce(s.deal_stage, f.deal_stage),
                   'source_rows', s.rows, 'fact_rows', f.rows,
                   'source_value', s.value, 'fact_value', f.value)), '[]')
          FROM (SELECT st.deal_stage_name AS deal_stage, count(*) AS rows,
                       coalesce(sum(round(p.close_value, 2)), 0) AS value
                  FROM etl.stage_sales_pipeline AS p
                  LEFT JOIN dwh.dim_deal_stage AS exact
                         ON exact.deal_stage_name = p.deal_stage AND exact.deal_stage_key <> -1
                  LEFT JOIN dwh.dim_deal_stage AS folded
                         ON dwh.deal_stage_match_key(folded.deal_stage_name)
                            = CASE WHEN exact.deal_stage_key IS NULL
                                   THEN dwh.deal_stage_match_key(p.deal_stage) END
                        AND folded.deal_stage_key <> -1
                  JOIN dwh.dim_deal_stage AS st
                    ON st.deal_stage_key = coalesce(exact.deal_stage_key, folded.deal_stage_key, -1)
                  LEFT JOIN quarantined AS q ON q.business_key = p.opportunity_id
                 WHERE q.business_key IS NULL
                 GROUP BY st.deal_stage_name) AS s
          FULL JOIN (SELECT st.deal_stage_name AS deal_stage, count(*) AS rows,
                            coalesce(sum(f.close_value), 0) AS value
                       FROM dwh.fact_sales_performance AS f
                       JOIN dwh.dim_deal_stage AS st USING (deal_stage_key)
                      WHERE NOT f.is_deleted
                      GROUP BY st.deal_stage_name) AS f ON f.deal_stage = s.deal_stage;

        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'dimensions hold every source account, agent and product',
               c.accounts = c.dim_accounts AND c.agents = c.dim_agents AND c.products = c.dim_products,
               format('%s accounts, %s agents, %s products', c.accounts, c.agents, c.products),
               format('%s accounts, %s agents, %s products', c.dim_accounts, c.dim_agents, c.dim_products),
               to_jsonb(c)
          FROM (SELECT (SELECT count(*) FROM etl.stage_accounts) AS accounts,
                       (SELECT count(*) FROM etl.stage_sales_agents) AS agents,
                       (SELECT count(*) FROM etl.stage_products) AS products,
                       (SELECT count(*) FROM dwh.dim_account
                         WHERE account_key <> -1 AND NOT is_deleted) AS dim_accounts,
                       (SELECT count(*) FROM dwh.dim_sales_agent
                         WHERE sales_agent_key <> -1 AND NOT is_deleted) AS dim_agents,
                       (SELECT count(*) FROM dwh.dim_product
                         WHERE product_key <> -1 AND is_current AND NOT is_deleted) AS dim_products) AS c;
    END IF;

    IF v_pipeline = 'initial_load' THEN
        -- Every fact: the load put its foreign keys back NOT VALID
        -- (etl.restore_ddl); validating them is this check, one pass each.
        FOR v_fk IN
            SELECT c.conrelid::regclass AS table_name, c.conname
              FROM pg_constraint AS c
             WHERE c.connamespace = 'dwh'::regnamespace AND c.contype = 'f' AND NOT c.convalidated
             ORDER BY 1, 2
        LOOP
            BEGIN
                EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_fk.table_name, v_fk.conname);
                v_validated := v_validated + 1;
            EXCEPTION WHEN foreign_key_violation THEN
                v_broken := v_broken || jsonb_build_object('constraint', v_fk.conname, 'error', SQLERRM);
            END;
        END LOOP;
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'every fact key resolves to a dimension row',
               jsonb_array_length(v_broken) = 0, '0 foreign keys broken',
               jsonb_array_length(v_broken)::text || ' foreign keys broken',
               jsonb_build_object('validated', v_validated, 'broken', v_broken);
    ELSE
        -- The facts of the window's deals (their foreign keys are enforced
        -- as they are written; this names a fact that escaped them).
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'every fact key resolves to a dimension row', c.unresolved = 0, '0',
               c.unresolved::text, NULL
          FROM (SELECT count(*) AS unresolved
                  FROM dwh.fact_sales_performance AS f
                  JOIN etl.stage_sales_pipeline AS s USING (opportunity_id)
                 WHERE NOT EXISTS (SELECT 1 FROM dwh.dim_account AS a WHERE a.account_key = f.account_key)
                    OR NOT EXISTS (SELECT 1 FROM dwh.dim_product AS p WHERE p.product_key = f.product_key)
                    OR NOT EXISTS (SELECT 1 FROM dwh.dim_sales_agent AS g
                                    WHERE g.sales_agent_key = f.sales_agent_key)
                    OR NOT EXISTS (SELECT 1 FROM dwh.dim_deal_stage AS s
                                    WHERE s.deal_stage_key = f.deal_stage_key)
                    OR NOT EXISTS (SELECT 1 FROM dwh.dim_date AS d WHERE d.date_key = f.engage_date_key)
                    OR NOT EXISTS (SELECT 1 FROM dwh.dim_date AS d WHERE d.date_key = f.close_date_key)
               ) AS c;
    END IF;

    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'every live product has exactly one current version', c.bad = 0, '0',
           c.bad::text, c.products
      FROM (SELECT count(*) AS bad, jsonb_agg(v.product_id) AS products
              FROM (SELECT p.product_id
                      FROM dwh.dim_product AS p
                     WHERE p.product_key <> -1
                     GROUP BY p.product_id
                    -- live: the latest version is not the one a delete closed
                    HAVING count(*) FILTER (WHERE p.is_current)
                           <> CASE WHEN (array_agg(p.is_deleted ORDER BY p.valid_from DESC))[1]
                                   THEN 0 ELSE 1 END) AS v) AS c;

    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'product versions never overlap', c.overlaps = 0, '0', c.overlaps::text, NULL
      FROM (SELECT count(*) AS overlaps
              FROM dwh.dim_product AS a
              JOIN dwh.dim_product AS b
                ON a.product_id = b.product_id AND a.product_key < b.product_key
               AND tstzrange(a.valid_from, a.valid_to) && tstzrange(b.valid_from, b.valid_to)) AS c;

    IF v_pipeline = 'initial_load' THEN
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'monthly aggregate equals its recomputation from the facts', c.differing = 0,
               '0 differing groups', c.differing::text || ' differing groups', c.sample
          FROM (SELECT count(*) AS differing,
                       jsonb_agg(jsonb_build_object(
                           'month_date_key', coalesce(t.month_date_key, r.month_date_key),
                           'sales_agent_key', coalesce(t.sales_agent_key, r.sales_agent_key),
                           'product_key', coalesce(t.product_key, r.product_key))) AS sample
                  FROM dwh.fact_sales_monthly_aggregate AS t
                  FULL JOIN dwh.monthly_aggregate_from_facts AS r
                    ON r.month_date_key = t.month_date_key AND r.sales_agent_key = t.sales_agent_key
                   AND r.product_key = t.product_key
                 WHERE (t.won_deals, t.lost_deals, t.won_value)
                       IS DISTINCT FROM (r.won_deals, r.lost_deals, r.won_value)) AS c;

        PERFORM etl.validate_summaries(p_run_id, false);
        PERFORM etl.check_history_summaries(p_run_id, false);
        PERFORM etl.check_fact_storage(p_run_id, false);
    ELSE
        -- A spot check of the groups this run refreshed, each against its own
        -- recomputation, from both sides (a missing or left-over row counts):
        -- validation_sample_groups of them, spread by a hash of their keys, so
        -- its cost stays bounded however large the groups grow.
        -- (Each side a correlated subquery of one value, a jsonb array: the
        -- group's facts through their index on one server; on Citus a worker
        -- returns no anonymous row, and has no etl.config for the sample's size.)
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'refreshed aggregate groups equal their recomputation from the facts',
               c.differing = 0, '0 differing of ' || c.groups || ' checked',
               c.differing::text || ' differing', c.sample
          FROM (SELECT count(*) AS groups,
                       count(*) FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS differing,
                       jsonb_agg(jsonb_build_object('month_date_key', x.month_date_key,
                                                    'sales_agent_key', x.sales_agent_key,
                                                    'product_key', x.product_key))
                           FILTER (WHERE x.stored IS DISTINCT FROM x.recomputed) AS sample
                  FROM (SELECT t.month_date_key, t.sales_agent_key, t.product_key,
                               (SELECT jsonb_build_array(a.won_deals, a.lost_deals, a.won_value)
                                  FROM dwh.fact_sales_monthly_aggregate AS a
                                 WHERE a.month_date_key = t.month_date_key
                                   AND a.sales_agent_key = t.sales_agent_key
                                   AND a.product_key = t.product_key) AS stored,
                               (SELECT jsonb_build_array(m.won_deals, m.lost_deals, m.won_value)
                                  FROM dwh.monthly_aggregate_from_facts AS m
                                 WHERE m.month_date_key = t.month_date_key
                                   AND m.sales_agent_key = t.sales_agent_key
                                   AND m.product_key = t.product_key) AS recomputed
                          FROM etl.touched_group AS t
                         WHERE t.refreshed_by_run = p_run_id
                         ORDER BY hashtext(t.month_date_key || ':' || t.sales_agent_key || ':' || t.product_key)
                         LIMIT v_sample_groups) AS x) AS c;

        PERFORM etl.validate_summaries(p_run_id, true);

        -- Every deal the window changed is a live fact as the source has it, a
        -- quarantined record, or (deleted in the source) a fact marked deleted.
        -- (The quarantined keys, local, and the deleted deals' live facts come
        -- as materialised CTEs: on Citus the staging and the facts are
        -- distributed, the deleted keys a reference table.)
        WITH quarantined AS MATERIALIZED (
            SELECT DISTINCT e.business_key FROM etl.error_log AS e
             WHERE e.run_id = p_run_id AND e.kind = 'quarantine' AND e.table_name = 'sales_pipeline'
        ),
        live_after_delete AS MATERIALIZED (
            SELECT f.opportunity_id FROM dwh.fact_sales_performance AS f
             WHERE NOT f.is_deleted
               AND f.opportunity_id IN (SELECT d.row_key FROM etl.stage_deleted AS d
                                         WHERE d.table_name = 'sales_pipeline')
        ),
        staged AS (
            SELECT s.opportunity_id,
                   EXISTS (SELECT 1 FROM dwh.fact_sales_performance AS f
                            WHERE f.opportunity_id = s.opportunity_id
                              AND NOT f.is_deleted AND f.run_id = p_run_id
                              AND f.deal_stage_key = coalesce(exact.deal_stage_key, folded.deal_stage_key, -1)
                              AND f.close_value IS NOT DISTINCT FROM round(s.close_value, 2)
                              AND f.archived_at IS NOT DISTINCT FROM s.archived_at
                              AND f.engage_date_key = dwh.date_key(
                                  CASE WHEN s.engage_date BETWEEN v_min AND v_max THEN s.engage_date END)
                              AND f.close_date_key = dwh.date_key(
                                  CASE WHEN s.close_date BETWEEN v_min AND v_max THEN s.close_date END))
                       AS loaded
              FROM etl.stage_sales_pipeline AS s
              LEFT JOIN dwh.dim_deal_stage AS exact
                     ON exact.deal_stage_name = s.deal_stage AND exact.deal_stage_key <> -1
              LEFT JOIN dwh.dim_deal_stage AS folded
                     ON dwh.deal_stage_match_key(folded.deal_stage_name)
                        = CASE WHEN exact.deal_stage_key IS NULL THEN dwh.deal_stage_match_key(s.deal_stage) END
                    AND folded.deal_stage_key <> -1
        )
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'every changed deal is loaded as in the source, quarantined or deleted',
               c.wrong = 0, '0 of ' || c.changed, c.wrong::text,
               CASE WHEN c.wrong > 0 THEN c.sample END
          FROM (SELECT count(*) AS changed,
                       count(*) FILTER (WHERE NOT x.ok) AS wrong,
                       jsonb_agg(x.opportunity_id) FILTER (WHERE NOT x.ok) AS sample
                  FROM (SELECT st.opportunity_id, q.business_key IS NOT NULL OR st.loaded AS ok
                          FROM staged AS st
                          LEFT JOIN quarantined AS q ON q.business_key = st.opportunity_id
                        UNION ALL
                        SELECT d.row_key, l.opportunity_id IS NULL
                          FROM etl.stage_deleted AS d
                          LEFT JOIN live_after_delete AS l ON l.opportunity_id = d.row_key
                         WHERE d.table_name = 'sales_pipeline') AS x) AS c;

        -- Deals engaged in the period of a product version this run opened
        -- are on it (dwh.insert_fact_batch moves them there).
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'deals engaged in a product version the run wrote are on it',
               c.misplaced = 0, '0', c.misplaced::text, c.sample
          FROM (SELECT count(*) AS misplaced,
                       jsonb_agg(jsonb_build_object('opportunity_id', m.opportunity_id,
                                                    'product_key', m.old_key,
                                                    'expected', m.new_key)) AS sample
                  FROM dwh.facts_off_their_version(p_run_id) AS m) AS c;

        -- The deal history's current rows agree with the window's facts.
        PERFORM etl.check_deal_history(p_run_id);
        PERFORM etl.check_history_summaries(p_run_id, true);
        PERFORM etl.check_fact_storage(p_run_id, true);
    END IF;

    RETURN QUERY SELECT * FROM etl.validation_result AS v WHERE v.run_id = p_run_id
                  ORDER BY v.validation_id;
END
$fn$;

COMMENT ON FUNCTION etl.validate(bigint) IS
'Checks the warehouse after a run (reconciliation with the source, keys, SCD2 periods, aggregate, summaries), '
'records every check in etl.validation_result and returns those rows.';
