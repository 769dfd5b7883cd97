-- Function: dwh.insert_fact_batch(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_fact_sales_performance: one batch of staged
--     opportunities (the whole source in an initial load, the deals a window
--     changed in an incremental update), taken as a range of the staging
--     table's heap blocks (a TID range scan: no sort, no index), sized to
--     the run's batch size. The batch is resolved once into etl.fact_batch:
--       - hard rules (quarantined in etl.error_log with the record and the
--         reason, not loaded): unknown deal stage, a date outside date_min ..
--         date_max, a close value that is NaN or cannot be stored;
--       - soft rules (loaded, listed in etl.data_quality_issue): close date
--         before engage date, Won without a value, a negative value, a closed
--         deal without a close date, fractions of a cent (stored rounded);
--       - every dimension key, Unknown (-1) for a missing reference; the
--         product key is the version in effect at the engage date, the latest
--         one without an engage date (dwh.product_version_lookup).
--     An initial load fills an empty table: the first batch sets its keys,
--     foreign keys and indexes aside (etl.suspend_ddl), the last puts them
--     back (etl.restore_ddl). An incremental update replaces the facts of
--     the batch's deals (a quarantined deal's fact is retired: is_deleted),
--     first marks the window's deleted deals deleted, and adds what the old
--     facts took from and the new ones give to each aggregate group to
--     etl.touched_group (dwh.fold_fact_contributions).
-- Returns: 'more' while blocks remain, NULL when done.
-- Tables: reads etl.stage_sales_pipeline, etl.stage_deleted, dwh dimensions,
--     etl.config; writes etl.fact_batch, dwh.fact_sales_performance,
--     etl.error_log, etl.data_quality_issue, etl.fact_contribution, etl.touched_group,
--     etl.loading_metadata (counts and resume_after, with the batch).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.insert_fact_batch(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_step etl.loading_metadata;
    v_run etl.run;
    v_incremental boolean;
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_max_value numeric := least(etl.config_value('max_close_value')::numeric, 1e16 - 0.01);
    v_blocks bigint := pg_relation_size('etl.stage_sales_pipeline') / current_setting('block_size')::bigint;
    v_rows_per_block double precision;
    v_first bigint;
    v_last bigint;
    v_loaded bigint;
    v_quarantined bigint;
    v_deleted bigint := 0;
    v_replaced bigint := 0;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.insert_fact_batch');
    SELECT m.* INTO v_step FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT r.* INTO v_run FROM etl.run AS r WHERE r.run_id = v_step.run_id;
    v_incremental := v_run.pipeline = 'incremental_update';
    v_first := coalesce(v_step.resume_after::bigint, 0);
    IF v_blocks < v_first THEN
        RAISE EXCEPTION 'the stage of run % is shorter than where its fact step stopped', v_run.run_id
            USING ERRCODE = '55000', HINT = 'Start the run again.';
    END IF;

    TRUNCATE etl.fact_contribution;
    IF v_first = 0 AND v_incremental THEN
        -- Deals deleted in the source: marked, never erased.
        WITH retired AS (
            UPDATE dwh.fact_sales_performance AS f
               SET is_deleted = true, run_id = v_run.run_id
              FROM etl.stage_deleted AS d
             WHERE d.table_name = 'sales_pipeline' AND f.opportunity_id = d.row_key
               AND NOT f.is_deleted
            RETURNING -1, f.close_month_key, f.sales_agent_key, f.product_key, f.is_closed, f.is_won,
                      f.close_value
        ),
        taken AS (INSERT INTO etl.fact_contribution SELECT * FROM retired)
        SELECT count(*) INTO v_deleted FROM retired;
    ELSIF v_first = 0 AND NOT EXISTS (SELECT FROM dwh.fact_sales_performance) THEN
        -- A rebuild fills an empty table: set its keys, foreign keys and
        -- indexes aside for the load, and put them back with the last batch.
        PERFORM etl.suspend_ddl('dwh.fact_sales_performance');
    END IF;

    SELECT CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages ELSE 100 END
      INTO v_rows_per_block
      FROM pg_class AS c WHERE c.oid = 'etl.stage_sales_pipeline'::regclass;
    v_last := least(v_first + greatest(1, floor(v_run.batch_size / greatest(v_rows_per_block, 1)))::bigint,
                    v_blocks);

    TRUNCATE etl.fact_batch;
    INSERT INTO etl.fact_batch
    SELECT s.*,
           CASE
               WHEN st.deal_stage_key IS NULL
                   THEN 'unknown deal stage ' || coalesce(quote_literal(s.deal_stage), 'NULL')
               WHEN s.engage_date NOT BETWEEN v_min AND v_max
                   THEN format('engage_date %s outside the accepted range %s .. %s',
                               s.engage_date, v_min, v_max)
               WHEN s.close_date NOT BETWEEN v_min AND v_max
                   THEN format('close_date %s outside the accepted range %s .. %s',
                               s.close_date, v_min, v_max)
               WHEN s.close_value = 'NaN'::numeric OR abs(s.close_value) > v_max_value
                   THEN format('close_value %s cannot be stored (limit %s)', s.close_value, v_max_value)
           END,
           array_remove(ARRAY[
               CASE WHEN s.close_date < s.engage_date THEN 'close date before engage date' END,
               CASE WHEN st.is_won AND s.close_value IS NULL THEN 'won deal without a close value' END,
               CASE WHEN s.close_value < 0 THEN 'negative close value' END,
               CASE WHEN st.is_closed AND s.close_date IS NULL THEN 'closed deal without a close date' END,
               CASE WHEN s.close_value <> round(s.close_value, 2) THEN 'close value rounded to cents' END
           ], NULL),
           coalesce(a.account_key, -1),
           coalesce(v.product_key, -1),
           coalesce(g.sales_agent_key, -1),
           st.deal_stage_key,
           v.sales_price,
           st.is_won,
           st.is_closed
      FROM etl.stage_sales_pipeline AS s
      LEFT JOIN dwh.dim_deal_stage AS st ON st.deal_stage_name = s.deal_stage AND st.deal_stage_key <> -1
      LEFT JOIN dwh.dim_account AS a ON a.account_id = s.account_id
      LEFT JOIN dwh.dim_sales_agent AS g ON g.sales_agent_id = s.sales_agent_id
      LEFT JOIN dwh.product_version_lookup AS v
             ON v.product_id = s.product_id
            AND CASE WHEN s.engage_date IS NULL THEN v.is_latest
                     ELSE s.engage_date >= v.lookup_first_day AND s.engage_date < v.lookup_before_day
                END
     WHERE s.ctid >= ('(' || v_first || ',0)')::tid AND s.ctid < ('(' || v_last || ',0)')::tid;

    INSERT INTO etl.error_log (run_id, procedure_name, kind, message, table_name, business_key, record)
    SELECT v_run.run_id, 'dwh.load_fact_sales_performance', 'quarantine', b.hard_reason,
           'sales_pipeline', b.opportunity_id,
           jsonb_build_object(
               'opportunity_id', b.opportunity_id, 'sales_agent_id', b.sales_agent_id,
               'product_id', b.product_id, 'account_id', b.account_id, 'deal_stage', b.deal_stage,
               'engage_date', b.engage_date, 'close_date', b.close_date, 'close_value', b.close_value)
      FROM etl.fact_batch AS b
     WHERE b.hard_reason IS NOT NULL;
    GET DIAGNOSTICS v_quarantined = ROW_COUNT;

    INSERT INTO etl.data_quality_issue (run_id, table_name, business_key, rule, record)
    SELECT v_run.run_id, 'sales_pipeline', b.opportunity_id, r.rule,
           jsonb_build_object(
               'opportunity_id', b.opportunity_id, 'deal_stage', b.deal_stage,
               'engage_date', b.engage_date, 'close_date', b.close_date, 'close_value', b.close_value)
      FROM etl.fact_batch AS b
     CROSS JOIN LATERAL unnest(b.soft_rules) AS r (rule)
     WHERE b.hard_reason IS NULL AND cardinality(b.soft_rules) > 0;

    IF v_incremental THEN
        -- The batch's deals replace their facts; a quarantined one retires its fact.
        WITH replaced AS (
            DELETE FROM dwh.fact_sales_performance AS f
             USING etl.fact_batch AS b
             WHERE f.opportunity_id = b.opportunity_id AND b.hard_reason IS NULL
            RETURNING -1, f.close_month_key, f.sales_agent_key, f.product_key,
                      f.is_closed AND NOT f.is_deleted, f.is_won, f.close_value
        ),
        retired AS (
            UPDATE dwh.fact_sales_performance AS f
               SET is_deleted = true, run_id = v_run.run_id
              FROM etl.fact_batch AS b
             WHERE f.opportunity_id = b.opportunity_id AND b.hard_reason IS NOT NULL
               AND NOT f.is_deleted
            RETURNING -1, f.close_month_key, f.sales_agent_key, f.product_key, f.is_closed, f.is_won,
                      f.close_value
        ),
        taken AS (
            INSERT INTO etl.fact_contribution
            SELECT * FROM replaced UNION ALL SELECT * FROM retired
        )
        SELECT (SELECT count(*) FROM replaced) INTO v_replaced;
    END IF;

    WITH loaded AS (
        INSERT INTO dwh.fact_sales_performance (
            opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,
            engage_date_key, close_date_key, close_value, list_price, is_won, is_closed,
            days_to_close, is_deleted, run_id
        )
        SELECT b.opportunity_id, b.account_key, b.product_key, b.sales_agent_key, b.deal_stage_key,
               dwh.date_key(b.engage_date), dwh.date_key(b.close_date), b.close_value, b.list_price,
               b.is_won, b.is_closed, b.close_date - b.engage_date, false, v_run.run_id
          FROM etl.fact_batch AS b
         WHERE b.hard_reason IS NULL
        RETURNING 1, close_month_key, sales_agent_key, product_key, is_closed, is_won, close_value
    ),
    added AS (INSERT INTO etl.fact_contribution SELECT * FROM loaded WHERE v_incremental)
    SELECT count(*) INTO v_loaded FROM loaded;

    IF v_incremental THEN
        PERFORM dwh.fold_fact_contributions();
    END IF;

    PERFORM etl.add_step_counts(
        p_loading_metadata_id,
        p_in => v_loaded + v_quarantined,
        p_inserted => v_loaded - v_replaced,
        p_updated => v_replaced,
        p_deleted => v_deleted,
        p_rejected => v_quarantined,
        p_resume_after => v_last::text
    );
    IF v_last < v_blocks THEN
        RETURN 'more';
    END IF;
    IF EXISTS (SELECT FROM etl.suspended_ddl AS s
                WHERE s.table_name = 'dwh.fact_sales_performance'::regclass) THEN
        PERFORM etl.restore_ddl('dwh.fact_sales_performance');
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.insert_fact_batch(bigint) IS
'Unit of dwh.load_fact_sales_performance: resolves one batch of staged deals (keys, hard rules '
'quarantined in etl.error_log, soft rules in etl.data_quality_issue) and writes its facts.';
