-- The opportunity fact: dwh.insert_fact_batch on hand-staged deals. Key
-- resolution (Unknown members, the product version in effect at the engage
-- date), measures, unresolved stages and dates outside the calendar on the
-- Unknown members (loaded, reported), the one hard rule that quarantines (a
-- value no column holds) and the soft rules that only report, the step's
-- counts, and batching over the staging heap.
BEGIN;
SELECT plan(53);

-- Schema contract --------------------------------------------------------------
SELECT has_table('dwh', 'fact_sales_performance', 'the opportunity fact exists');
SELECT col_is_pk('dwh', 'fact_sales_performance_hot', 'opportunity_id', 'one fact row per opportunity (hot part)');
SELECT col_is_pk('dwh', 'fact_sales_performance_cold', 'opportunity_id', 'one fact row per opportunity (cold part)');
SELECT has_view('dwh', 'product_version_lookup', 'product versions are resolved through dwh.product_version_lookup');
SELECT function_returns('dwh', 'insert_fact_batch', ARRAY['bigint'], 'text', 'dwh.insert_fact_batch(step) is a unit');

-- Dimensions: the small source, plus product 7 with two versions set by hand ------------
SELECT tests.stage_small_source();
SELECT tests.run_unit('initial_load', 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account');
SELECT tests.run_unit('initial_load', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent', 'dwh.upsert_dim_sales_agent');
SELECT tests.run_unit('initial_load', 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions');
SELECT tests.running_run() AS run1 \gset
INSERT INTO dwh.dim_product (product_id, product_name, series, sales_price, valid_from, valid_to, is_current)
VALUES (7, 'Versioned', 'Old', 100, '2017-03-01 00:00+00', '2017-06-01 00:00+00', false),
       (7, 'Versioned', 'New', 120, '2017-06-01 00:00+00', 'infinity', true);
SELECT product_key AS va_key FROM dwh.dim_product WHERE product_id = 7 AND NOT is_current \gset
SELECT product_key AS vb_key FROM dwh.dim_product WHERE product_id = 7 AND is_current \gset

-- Staged deals ------------------------------------------------------------------------
--                   id    stage          engage        close         value   account product agent
SELECT tests.stage_deal('K1', 'Won',         '2017-01-10', '2017-02-10', 1000,   1,   1,  1);
SELECT tests.stage_deal('K2', 'Prospecting', '2017-04-01', NULL,         NULL,   NULL, 2, 2);
SELECT tests.stage_deal('K3', 'Engaging',    NULL,         NULL,         NULL,   99,  99, 99);
SELECT tests.stage_deal('K4', 'Lost',        '2017-02-01', '2017-03-01', 0,      2,   2,  1);
-- product 7: before its first version, inside it, on the day the next starts, after, no date
SELECT tests.stage_deal('V1', 'Engaging',    '2017-01-15', NULL,         NULL,   1,   7,  1);
SELECT tests.stage_deal('V2', 'Engaging',    '2017-04-15', NULL,         NULL,   1,   7,  1);
SELECT tests.stage_deal('V3', 'Engaging',    '2017-06-01', NULL,         NULL,   1,   7,  1);
SELECT tests.stage_deal('V4', 'Engaging',    '2017-08-01', NULL,         NULL,   1,   7,  1);
SELECT tests.stage_deal('V5', 'Prospecting', NULL,         NULL,         NULL,   1,   7,  1);
-- soft rules: loaded, and reported
SELECT tests.stage_deal('S1', 'Won',         '2017-03-10', '2017-03-01', 10);
SELECT tests.stage_deal('S2', 'Won',         '2017-03-10', '2017-03-20', NULL);
SELECT tests.stage_deal('S3', 'Won',         '2017-03-10', '2017-03-20', -5);
SELECT tests.stage_deal('S4', 'Lost',        '2017-03-10', NULL,         0);
-- unresolved references: loaded on the Unknown members (-1), and reported
SELECT tests.stage_deal('U1', 'Negotiating');
SELECT tests.stage_deal('U2', 'Unknown');
SELECT tests.stage_deal('U3', NULL);
SELECT tests.stage_deal('U4', 'Won',         '1980-01-01', '2017-02-10', 1000,   1,   7,  1);
SELECT tests.stage_deal('U5', 'Won',         '2017-01-10', '2150-01-01', 1000);
SELECT tests.stage_deal('U6', 'Lost',        'infinity',   '2017-02-10', 0);
-- stage names that resolve once trimmed and case-folded
SELECT tests.stage_deal('N1', 'won');
SELECT tests.stage_deal('N2', ' Won ');
SELECT tests.stage_deal('N3', 'LOST',        '2017-01-10', '2017-02-10', 0);
-- a value above max_close_value, and the largest numeric(18, 2) holds: loaded as is
SELECT tests.stage_deal('L1', 'Won',         '2017-01-10', '2017-02-10', 1e13);
SELECT tests.stage_deal('L2', 'Won',         '2017-01-10', '2017-02-10', 9999999999999999.99);
-- the hard rule: a value no column holds is quarantined
SELECT tests.stage_deal('H6', 'Won',         '2017-01-10', '2017-02-10', 'NaN');
SELECT tests.stage_deal('H7', 'Won',         '2017-01-10', '2017-02-10', 1e16);
SELECT tests.stage_deal('H8', 'Won',         '2017-01-10', '2017-02-10', 'Infinity');
SELECT tests.stage_deal('H9', 'Won',         '2017-01-10', '2017-02-10', 9999999999999999.995);

SELECT tests.run_unit('initial_load', 'dwh.load_dim_date', 'dwh.dim_date', 'dwh.extend_dim_date_to_stage');
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS f1 \gset
SELECT is(dwh.insert_fact_batch(:f1), NULL, 'a stage that fits in one batch is loaded in one call (returns NULL)');

-- What was loaded, and how its keys resolve ------------------------------------------------
SELECT set_eq(
    $$SELECT opportunity_id FROM dwh.fact_sales_performance$$,
    $$VALUES ('K1'), ('K2'), ('K3'), ('K4'), ('V1'), ('V2'), ('V3'), ('V4'), ('V5'),
             ('S1'), ('S2'), ('S3'), ('S4'), ('U1'), ('U2'), ('U3'), ('U4'), ('U5'), ('U6'),
             ('N1'), ('N2'), ('N3'), ('L1'), ('L2')$$,
    'every deal is loaded, unresolved references included, but those whose value no column holds'
);
SELECT results_eq(
    $$SELECT a.account_id, p.product_id, g.sales_agent_id, s.deal_stage_name, f.engage_date_key, f.close_date_key,
             f.close_value, f.list_price, f.is_won, f.is_closed, f.days_to_close, f.is_deleted
        FROM dwh.fact_sales_performance AS f
        JOIN dwh.dim_account AS a USING (account_key)
        JOIN dwh.dim_product AS p USING (product_key)
        JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
        JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE f.opportunity_id = 'K1'$$,
    $$VALUES (1, 1, 1, 'Won'::text, 20170110, 20170210, 1000::numeric(18, 2), 550::numeric, true, true, 31, false)$$,
    'a won deal resolves every key to its dimension row, with list price, won/closed flags and days to close'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.fact_sales_performance WHERE run_id = :run1), 24,
    'every loaded fact carries the run that wrote it'
);
SELECT results_eq(
    $$SELECT account_key, close_date_key, close_value, is_won, is_closed, days_to_close
        FROM dwh.fact_sales_performance WHERE opportunity_id = 'K2'$$,
    $$VALUES (-1, -1, NULL::numeric(18, 2), false, false, NULL::integer)$$,
    'an open deal with no account and no close date points at Unknown (-1) for both'
);
SELECT results_eq(
    $$SELECT account_key, product_key, sales_agent_key, engage_date_key, close_date_key, list_price
        FROM dwh.fact_sales_performance WHERE opportunity_id = 'K3'$$,
    $$VALUES (-1, -1, -1, -1, -1, NULL::numeric)$$,
    'references the dimensions do not know, and NULL dates, point at Unknown (-1) instead of being dropped'
);
SELECT results_eq(
    $$SELECT f.close_value, f.is_won, f.is_closed, f.days_to_close, s.deal_stage_name
        FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE f.opportunity_id = 'K4'$$,
    $$VALUES (0::numeric(18, 2), false, true, 28, 'Lost'::text)$$,
    'a lost deal is closed, not won, with its days to close'
);
SELECT is(
    (SELECT array_agg(s.deal_stage_name || ':' || f.is_closed || '/' || f.is_won ORDER BY f.opportunity_id)
       FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
      WHERE f.opportunity_id IN ('K2', 'V1')),
    ARRAY['Prospecting:false/false', 'Engaging:false/false'],
    'Prospecting and Engaging deals are open'
);

-- The product version in effect at the engage date ----------------------------------------------
SELECT results_eq(
    $$SELECT product_key, list_price FROM dwh.fact_sales_performance WHERE opportunity_id = 'V1'$$,
    format('VALUES (%s, 100::numeric)', :va_key),
    'a deal engaged before the product''s first version takes the first version'
);
SELECT results_eq(
    $$SELECT product_key, list_price FROM dwh.fact_sales_performance WHERE opportunity_id = 'V2'$$,
    format('VALUES (%s, 100::numeric)', :va_key),
    'a deal engaged inside a version''s period takes that version and its list price'
);
SELECT results_eq(
    $$SELECT product_key, list_price FROM dwh.fact_sales_performance WHERE opportunity_id = 'V3'$$,
    format('VALUES (%s, 120::numeric)', :vb_key),
    'a deal engaged on the day a version starts takes that version'
);
SELECT results_eq(
    $$SELECT product_key, list_price FROM dwh.fact_sales_performance WHERE opportunity_id = 'V4'$$,
    format('VALUES (%s, 120::numeric)', :vb_key),
    'a deal engaged after the last change takes the current version'
);
SELECT results_eq(
    $$SELECT product_key, list_price FROM dwh.fact_sales_performance WHERE opportunity_id = 'V5'$$,
    format('VALUES (%s, 120::numeric)', :vb_key),
    'a deal without an engage date takes the latest version'
);

-- Soft rules: loaded, and listed in etl.data_quality_issue -------------------------------------
SELECT set_eq(
    $$SELECT business_key, rule, table_name, run_id FROM etl.data_quality_issue$$,
    format($q$VALUES ('S1', 'close date before engage date', 'sales_pipeline', %1$s::bigint),
                     ('S2', 'won deal without a close value', 'sales_pipeline', %1$s),
                     ('S3', 'negative close value', 'sales_pipeline', %1$s),
                     ('S4', 'closed deal without a close date', 'sales_pipeline', %1$s),
                     ('U1', 'unknown deal stage', 'sales_pipeline', %1$s),
                     ('U2', 'unknown deal stage', 'sales_pipeline', %1$s),
                     ('U3', 'unknown deal stage', 'sales_pipeline', %1$s),
                     ('U4', 'engage date outside the calendar', 'sales_pipeline', %1$s),
                     ('U5', 'close date outside the calendar', 'sales_pipeline', %1$s),
                     ('U6', 'engage date outside the calendar', 'sales_pipeline', %1$s),
                     ('N1', 'deal stage read once trimmed and case-folded', 'sales_pipeline', %1$s),
                     ('N2', 'deal stage read once trimmed and case-folded', 'sales_pipeline', %1$s),
                     ('N3', 'deal stage read once trimmed and case-folded', 'sales_pipeline', %1$s),
                     ('L1', 'close value above max_close_value', 'sales_pipeline', %1$s),
                     ('L2', 'close value above max_close_value', 'sales_pipeline', %1$s)$q$, :run1),
    'each rule a loaded deal breaks is listed once, with the run, and clean deals are not listed'
);
SELECT is(
    (SELECT days_to_close FROM dwh.fact_sales_performance WHERE opportunity_id = 'S1'), -9,
    'a deal closed before it was engaged is loaded with its negative days to close'
);
SELECT is(
    (SELECT close_date_key FROM dwh.fact_sales_performance WHERE opportunity_id = 'S4'), -1,
    'a closed deal without a close date is loaded with the Unknown close date'
);
SELECT is(
    (SELECT record FROM etl.data_quality_issue WHERE business_key = 'S3'),
    jsonb_build_object('opportunity_id', 'S3', 'deal_stage', 'Won', 'engage_date', '2017-03-10',
                       'close_date', '2017-03-20', 'close_value', -5),
    'a data-quality issue keeps the offending record as jsonb'
);

-- Unresolved references: on the Unknown members, live, counted, and reported --------------------
SELECT results_eq(
    $$SELECT f.opportunity_id, f.deal_stage_key::integer, f.is_closed, f.is_won, f.is_deleted
        FROM dwh.fact_sales_performance AS f WHERE f.opportunity_id IN ('U1', 'U2', 'U3')
       ORDER BY 1$$,
    $$VALUES ('U1'::text, -1, false, false, false), ('U2', -1, false, false, false),
             ('U3', -1, false, false, false)$$,
    'a stage that does not resolve (Negotiating, the Unknown member''s own name, NULL) is the live Unknown stage, neither won nor lost'
);
SELECT is(
    (SELECT record ->> 'detail' FROM etl.data_quality_issue WHERE business_key = 'U1'),
    'deal stage ''Negotiating'' does not resolve (trimmed and case-folded): Unknown stage',
    'the issue of an unknown stage names the stage'
);
SELECT is(
    (SELECT record ->> 'detail' FROM etl.data_quality_issue WHERE business_key = 'U3'),
    'deal stage NULL does not resolve (trimmed and case-folded): Unknown stage',
    'a deal with no stage is reported as such'
);
SELECT results_eq(
    $$SELECT engage_date_key, close_date_key, days_to_close, product_key, close_value, is_won
        FROM dwh.fact_sales_performance WHERE opportunity_id = 'U4'$$,
    format('VALUES (-1, 20170210, NULL::integer, %s, 1000::numeric(18, 2), true)', :vb_key),
    'an engage date before date_min is the Unknown date; the deal takes the latest product version, as without an engage date'
);
SELECT matches(
    (SELECT record ->> 'detail' FROM etl.data_quality_issue WHERE business_key = 'U4'),
    '^engage_date 1980-01-01 outside the calendar 1990-01-01 \.\. 2099-12-31',
    'the issue of a date outside the calendar names the date and the calendar'
);
SELECT results_eq(
    $$SELECT engage_date_key, close_date_key, close_month_key, is_closed FROM dwh.fact_sales_performance
       WHERE opportunity_id IN ('U5', 'U6') ORDER BY opportunity_id$$,
    $$VALUES (20170110, -1, -1, true), (-1, 20170210, 20170201, true)$$,
    'a close date after date_max, and an infinite engage date, are the Unknown date; the deal stays closed'
);
SELECT results_eq(
    $$SELECT f.opportunity_id, s.deal_stage_name, f.is_won, f.is_closed
        FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE f.opportunity_id IN ('N1', 'N2', 'N3') ORDER BY 1$$,
    $$VALUES ('N1'::text, 'Won'::text, true, true), ('N2', 'Won', true, true), ('N3', 'Lost', false, true)$$,
    'stage names differing only in case or white space resolve to their stage'
);
SELECT is(
    (SELECT record ->> 'detail' FROM etl.data_quality_issue WHERE business_key = 'N2'),
    'deal stage '' Won '' read as ''Won''',
    'the issue of a folded stage says what it was read as'
);
SELECT results_eq(
    $$SELECT opportunity_id, close_value FROM dwh.fact_sales_performance
       WHERE opportunity_id IN ('L1', 'L2') ORDER BY 1$$,
    $$VALUES ('L1'::text, 10000000000000::numeric(18, 2)), ('L2', 9999999999999999.99)$$,
    'a close value above max_close_value that numeric(18, 2) holds is loaded as is'
);
SELECT is(
    (SELECT record ->> 'detail' FROM etl.data_quality_issue WHERE business_key = 'L1'),
    'close_value 10000000000000 above max_close_value 1000000000000: loaded as is',
    'the issue of a large value names the value and the setting'
);

-- The hard rule: a value no column holds is quarantined in etl.error_log, not loaded ------------
SELECT results_eq(
    $$SELECT business_key, kind, table_name, procedure_name, run_id FROM etl.error_log ORDER BY business_key$$,
    format($q$VALUES ('H6'::text, 'quarantine'::text, 'sales_pipeline'::text, 'dwh.load_fact_sales_performance'::text, %1$s::bigint),
                     ('H7', 'quarantine', 'sales_pipeline', 'dwh.load_fact_sales_performance', %1$s),
                     ('H8', 'quarantine', 'sales_pipeline', 'dwh.load_fact_sales_performance', %1$s),
                     ('H9', 'quarantine', 'sales_pipeline', 'dwh.load_fact_sales_performance', %1$s)$q$, :run1),
    'only the deals whose value no column holds are quarantined, once, by business key, with the run and the step'
);
SELECT matches(
    (SELECT message FROM etl.error_log WHERE business_key = 'H6'), '^close_value NaN cannot be stored',
    'a NaN close value is quarantined'
);
SELECT matches(
    (SELECT message FROM etl.error_log WHERE business_key = 'H7'), '^close_value 10000000000000000 cannot be stored',
    'a close value beyond numeric(18, 2) is quarantined, naming the value'
);
SELECT matches(
    (SELECT message FROM etl.error_log WHERE business_key = 'H8'), '^close_value Infinity cannot be stored',
    'an infinite close value is quarantined'
);
SELECT matches(
    (SELECT message FROM etl.error_log WHERE business_key = 'H9'), '^close_value 9999999999999999.995 cannot be stored',
    'a close value that rounds to cents beyond numeric(18, 2) is quarantined'
);
SELECT is(
    (SELECT record FROM etl.error_log WHERE business_key = 'H6'),
    jsonb_build_object('opportunity_id', 'H6', 'sales_agent_id', 1, 'product_id', 1, 'account_id', 1,
                       'deal_stage', 'Won', 'engage_date', '2017-01-10', 'close_date', '2017-02-10',
                       'close_value', 'NaN'::numeric),
    'a quarantined deal keeps its whole source record as jsonb'
);
SELECT is_empty(
    $$SELECT business_key FROM etl.data_quality_issue WHERE business_key LIKE 'H%'$$,
    'a quarantined deal is not also listed as a soft-rule issue'
);

-- The step's counts ----------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated, rows_rejected, batches, resume_after
        FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :f1,
    $$SELECT 28::bigint, 24::bigint, 0::bigint, 4::bigint, 1,
             (pg_relation_size('etl.stage_sales_pipeline') / current_setting('block_size')::bigint)::text$$,
    'the fact step counts 28 in, 24 inserted, 4 rejected, and resumes after the last heap block'
);
SELECT is(dwh.insert_fact_batch(:f1), NULL, 'calling the unit again once it is done loads nothing and says done');
SELECT is(
    (SELECT rows_in FROM etl.loading_metadata WHERE loading_metadata_id = :f1), 28::bigint,
    'a call after the last batch reads no row again'
);

-- A resume point beyond the stage means the staged source is gone (a crash emptied it).
UPDATE etl.loading_metadata SET resume_after = '999' WHERE loading_metadata_id = :f1;
SELECT throws_ok(
    format('SELECT dwh.insert_fact_batch(%s)', :f1), '55000', NULL,
    'a resume point past the end of the stage is refused (55000): the staged source is gone'
);

-- Batching: a tiny batch size takes several calls, each row exactly once ---------------------------
SELECT tests.end_run();
DELETE FROM dwh.fact_sales_performance;
TRUNCATE etl.stage_sales_pipeline;
SELECT tests.stage_deal(format('B%s', lpad(g::text, 4, '0')), CASE WHEN g % 3 = 0 THEN 'Lost' ELSE 'Won' END)
  FROM generate_series(1, 400) AS g;
SELECT tests.stage_deal('BHARD', 'Won', '2017-01-10', '2017-02-10', 'NaN');
SELECT (pg_relation_size('etl.stage_sales_pipeline') / current_setting('block_size')::bigint) AS blocks \gset
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS f2 \gset
SELECT tests.running_run() AS run2 \gset
UPDATE etl.run SET batch_size = 1 WHERE run_id = :run2;

SELECT ok(:blocks > 2, 'the batching test stages rows over several heap blocks');
SELECT is(dwh.insert_fact_batch(:f2), 'more', 'with a tiny batch size the first call loads one batch and says more');
SELECT results_eq(
    $$SELECT batches, resume_after FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :f2,
    $$VALUES (1, '1')$$,
    'the first batch records where the next one starts'
);
SELECT ok(
    (SELECT count(*) BETWEEN 1 AND 399 FROM dwh.fact_sales_performance),
    'the first batch loads part of the stage, not all of it'
);
SELECT is(
    tests.run_unit('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                   'dwh.insert_fact_batch'),
    :blocks - 1,
    'the step resumes after the first batch and needs one more call per remaining heap block'
);
SELECT set_eq(
    $$SELECT opportunity_id FROM dwh.fact_sales_performance$$,
    $$SELECT opportunity_id FROM etl.stage_sales_pipeline WHERE opportunity_id <> 'BHARD'$$,
    'after the last batch every staged deal is loaded (each at most once: the key forbids twice)'
);
SELECT is(
    (SELECT count(*)::integer FROM etl.error_log WHERE business_key = 'BHARD' AND run_id = :run2), 1,
    'a quarantined deal is quarantined once across batches'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_rejected, batches, resume_after
        FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :f2,
    format('VALUES (401::bigint, 400::bigint, 1::bigint, %s, %L)', :blocks, :blocks),
    'the counts add up over the batches: 401 in, 400 inserted, 1 rejected, one batch per block'
);

-- An emptied stage after an extract that read rows means a crash: refused, not an empty load.
SELECT tests.end_run();
TRUNCATE etl.stage_accounts, etl.stage_products, etl.stage_sales_agents, etl.stage_sales_pipeline;
SELECT tests.open_step('initial_load', 'etl.extract_source', 'etl.stage_*') AS x3 \gset
UPDATE etl.loading_metadata SET rows_in = 10, status = 'succeeded' WHERE loading_metadata_id = :x3;
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS f3 \gset
SELECT throws_ok(
    format($q$SELECT etl.begin_step(%s, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance')$q$,
           tests.running_run()), '55000', NULL,
    'an empty stage after an extract that read rows is refused (55000): the unlogged stage was lost'
);
SELECT tests.end_run();
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS f4 \gset
SELECT is(dwh.insert_fact_batch(:f4), NULL, 'an empty stage from an empty source is simply done');

SELECT * FROM finish();
ROLLBACK;
