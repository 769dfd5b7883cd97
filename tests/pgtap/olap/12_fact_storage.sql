-- Where the facts are stored: dwh.fact_sales_performance in a hot and a cold
-- part (LIST partitions on is_cold), the one rule that places a fact
-- (dwh.is_cold_fact) by the horizon (etl.config cold_horizon through
-- etl.cold_horizon, in force in etl.fact_storage), the initial load placing
-- every fact, the incremental fact step rewriting a fact in whichever part
-- holds it and placing it again, the horizon move (dwh.move_fact_batch) in
-- both directions, batched and idempotent, and one fact per opportunity
-- across the parts: kept by dwh.keep_one_fact_per_opportunity, checked by
-- etl.check_fact_storage.
BEGIN;
SELECT plan(53);

-- Schema ---------------------------------------------------------------------------------
SELECT is((SELECT c.relkind::text FROM pg_class AS c WHERE c.oid = 'dwh.fact_sales_performance'::regclass), 'p',
          'dwh.fact_sales_performance is one partitioned table: analysts keep its one name');
SELECT is((SELECT pg_get_partkeydef('dwh.fact_sales_performance'::regclass)), 'LIST (is_cold)',
          'its parts are chosen by is_cold');
SELECT set_eq(
    $$SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
       WHERE i.inhparent = 'dwh.fact_sales_performance'::regclass$$,
    $$VALUES ('fact_sales_performance_hot', 'FOR VALUES IN (false)'),
             ('fact_sales_performance_cold', 'FOR VALUES IN (true)')$$,
    'two parts: fact_sales_performance_hot and fact_sales_performance_cold'
);
SELECT hasnt_pk('dwh', 'fact_sales_performance',
                'no key on the partitioned table: it would have to hold is_cold, and index fewer keys than the source');
SELECT col_is_pk('dwh', 'fact_sales_performance_hot', 'opportunity_id', 'the hot part''s key is opportunity_id');
SELECT col_is_pk('dwh', 'fact_sales_performance_cold', 'opportunity_id', 'so is the cold part''s');
SELECT trigger_is('dwh', 'fact_sales_performance', 'one_fact_per_opportunity_insert',
                  'dwh', 'keep_one_fact_per_opportunity', 'inserts are checked across the parts');
SELECT trigger_is('dwh', 'fact_sales_performance', 'one_fact_per_opportunity_update',
                  'dwh', 'keep_one_fact_per_opportunity', 'updates are checked across the parts');
SELECT is((SELECT count(*)::integer FROM pg_trigger AS t
            WHERE t.tgrelid IN ('dwh.fact_sales_performance_hot'::regclass, 'dwh.fact_sales_performance_cold'::regclass)
              AND t.tgfoid = 'dwh.keep_one_fact_per_opportunity'::regproc AND t.tgparentid = 0), 4,
          'so are inserts and updates that name a part (a statement trigger fires for the table it names)');
SELECT is((SELECT value FROM etl.config WHERE key = 'cold_horizon'), '2 years', 'the default horizon is two years');

-- The rule and the horizon -----------------------------------------------------------------
SELECT is(dwh.is_cold_fact(true, 20170210, '2017-03-01'), true, 'a deal closed before the horizon is cold');
SELECT is(dwh.is_cold_fact(true, 20170301, '2017-03-01'), false, 'one closed on the horizon''s day is hot');
SELECT is(dwh.is_cold_fact(false, 20170210, '2017-03-01'), false, 'an open deal is hot, whatever its dates');
SELECT is(dwh.is_cold_fact(true, -1, '2017-03-01'), false, 'a closed deal with an unknown close date is hot');
SELECT is(dwh.is_cold_fact(true, 20170210, NULL), false, 'without a horizon every deal is hot');
SELECT is(dwh.is_cold_fact(NULL, 20170210, '2017-03-01'), false, 'never NULL');

UPDATE etl.config SET value = '2 years' WHERE key = 'cold_horizon';
SELECT is(etl.cold_horizon('2026-12-06 10:00+00'), '2024-12-01'::date,
          'an interval: the first day of the month that long before the run''s start');
UPDATE etl.config SET value = ' 2016-07-15 ' WHERE key = 'cold_horizon';
SELECT is(etl.cold_horizon('2026-12-06 10:00+00'), '2016-07-15'::date, 'a date: as given');
UPDATE etl.config SET value = 'None' WHERE key = 'cold_horizon';
SELECT is(etl.cold_horizon('2026-12-06 10:00+00'), NULL::date, '''none'': no horizon, every fact hot');
UPDATE etl.config SET value = 'two years' WHERE key = 'cold_horizon';
SELECT throws_ok($$SELECT etl.cold_horizon(now())$$, '22023',
                 'etl.config cold_horizon ''two years'': not a positive interval, a date as YYYY-MM-DD or ''none''',
                 'a value that is none of these is refused, named (22023)');
UPDATE etl.config SET value = '2017-02-30' WHERE key = 'cold_horizon';
SELECT throws_ok($$SELECT etl.cold_horizon(now())$$, '22023', NULL, 'so is a date that does not exist');
UPDATE etl.config SET value = '-1 year' WHERE key = 'cold_horizon';
SELECT throws_ok($$SELECT etl.cold_horizon(now())$$, '22023', NULL,
                 'and an interval that is not positive (a horizon after the run''s start)');
UPDATE etl.config SET value = '2 years ago' WHERE key = 'cold_horizon';
SELECT throws_ok($$SELECT etl.cold_horizon(now())$$, '22023', NULL, '... ''2 years ago'' is -2 years to PostgreSQL');
UPDATE etl.config SET value = '20170601' WHERE key = 'cold_horizon';
SELECT throws_ok($$SELECT etl.cold_horizon(now())$$, '22023', NULL,
                 'and a bare number (PostgreSQL would read seconds): a date is YYYY-MM-DD');
SELECT throws_ok($$SELECT etl.open_run('initial_load', NULL, false)$$, '22023', NULL,
                 'an initial load does not start with a horizon that is not one: nothing is emptied');

-- The initial load places every fact ----------------------------------------------------------
UPDATE etl.config SET value = '2017-03-01' WHERE key = 'cold_horizon';
SELECT tests.stage_small_source();
--                   id    stage          engage        close         value
SELECT tests.stage_deal('K1', 'Won',         '2017-01-10', '2017-02-10', 1000);
SELECT tests.stage_deal('K2', 'Prospecting', '2017-01-01', NULL,         NULL);
SELECT tests.stage_deal('K4', 'Lost',        '2017-02-01', '2017-03-01', 0);
SELECT tests.stage_deal('K5', 'Won',         '2017-01-10', '2017-02-28', 500);
SELECT tests.load_staged('initial_load') AS load_run \gset
SELECT set_eq(
    $$SELECT opportunity_id, tableoid::regclass::text AS part FROM dwh.fact_sales_performance$$,
    $$VALUES ('K1', 'dwh.fact_sales_performance_cold'), ('K2', 'dwh.fact_sales_performance_hot'),
             ('K4', 'dwh.fact_sales_performance_hot'), ('K5', 'dwh.fact_sales_performance_cold')$$,
    'the initial load puts the deals closed before the horizon in the cold part, the others in the hot one'
);
SELECT is((SELECT cold_before FROM etl.fact_storage), '2017-03-01'::date,
          'the initial load sets the horizon in force from etl.config at its start');
SELECT is((SELECT run_id FROM etl.fact_storage), :load_run::bigint, '... recording the run that set it');
SELECT is((SELECT count(*)::integer FROM etl.suspended_ddl), 0,
          'what the load set aside (keys, foreign keys, indexes, the trigger) is all back');
SELECT is((SELECT t.tgenabled::text FROM pg_trigger AS t
            WHERE t.tgrelid = 'dwh.fact_sales_performance'::regclass
              AND t.tgname = 'one_fact_per_opportunity_insert'), 'O', 'the one-fact trigger is enabled again');
SELECT is((SELECT count(*)::integer FROM pg_index AS i
            WHERE i.indrelid = 'dwh.fact_sales_performance_cold'::regclass),
          (SELECT count(*)::integer + 1 FROM pg_index AS i
            WHERE i.indrelid = 'dwh.fact_sales_performance'::regclass),
          'each index of the table is made again on the parts, and each part''s own key (the cold one''s here)');

-- One fact per opportunity across the parts ---------------------------------------------------
-- pg_temp.copy_fact(table, key, is_cold): the INSERT of a copy of a deal's fact into table.
CREATE FUNCTION pg_temp.copy_fact(p_table text, p_key text, p_is_cold text) RETURNS text
LANGUAGE sql AS $fn$
    SELECT format(
        'INSERT INTO %s (opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,'
        ' engage_date_key, close_date_key, is_won, is_closed, run_id, is_cold)'
        ' SELECT opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,'
        ' engage_date_key, close_date_key, is_won, is_closed, run_id, %s'
        ' FROM dwh.fact_sales_performance WHERE opportunity_id = %L', p_table, p_is_cold, p_key);
$fn$;
SELECT throws_ok(
    pg_temp.copy_fact('dwh.fact_sales_performance', 'K1', 'false'),
    '23505', 'dwh.fact_sales_performance: opportunity_id K1 would have a fact in both parts',
    'a second fact of a deal in the other part is refused (23505), though the part''s key allows it'
);
SELECT throws_ok(
    pg_temp.copy_fact('dwh.fact_sales_performance', 'K2', 'is_cold'),
    '23505', NULL, 'and one in the same part by the key'
);
SELECT throws_ok(
    pg_temp.copy_fact('dwh.fact_sales_performance_hot', 'K1', 'false'),
    '23505', 'dwh.fact_sales_performance: opportunity_id K1 would have a fact in both parts',
    'and a second fact written into the other part directly, by name'
);
SELECT lives_ok($$UPDATE dwh.fact_sales_performance SET is_cold = NOT is_cold WHERE opportunity_id = 'K4'$$,
                'moving a fact from one part to the other is one fact still');
SELECT is((SELECT count(*)::integer FROM dwh.fact_sales_performance WHERE opportunity_id = 'K4'), 1,
          '... one row');
UPDATE dwh.fact_sales_performance SET is_cold = NOT is_cold WHERE opportunity_id = 'K4';
SELECT etl.check_fact_storage(:load_run, false);
SELECT set_eq(
    $$SELECT check_name, passed FROM etl.validation_result WHERE run_id = $$ || :load_run,
    $$VALUES ('one fact per opportunity across the hot and cold parts', true),
             ('facts are stored where the horizon places them', true)$$,
    'the whole check passes on the initial load''s facts'
);
SELECT tests.end_run();

-- The incremental fact step: a fact is rewritten where it is, and placed again ---------------------
TRUNCATE etl.stage_sales_pipeline;
SELECT tests.stage_deal('K1', 'Won',         '2017-01-10', '2017-02-10', 2000);  -- changed, still cold
SELECT tests.stage_deal('K2', 'Won',         '2017-01-01', '2017-01-05', 10);    -- closed long ago: cold
SELECT tests.stage_deal('K5', 'Engaging',    '2017-01-10', NULL,         NULL);  -- reopened: hot
SELECT tests.stage_deal('K9', 'Lost',        '2016-05-01', '2016-06-01', 0);     -- new, old: cold
SELECT tests.run_unit('incremental_update', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                      'dwh.insert_fact_batch');
SELECT tests.running_run() AS inc_run \gset
SELECT set_eq(
    $$SELECT opportunity_id, tableoid::regclass::text AS part, close_value FROM dwh.fact_sales_performance$$,
    $$VALUES ('K1', 'dwh.fact_sales_performance_cold', 2000.00), ('K2', 'dwh.fact_sales_performance_cold', 10.00),
             ('K4', 'dwh.fact_sales_performance_hot', 0.00), ('K5', 'dwh.fact_sales_performance_hot', NULL),
             ('K9', 'dwh.fact_sales_performance_cold', 0.00)$$,
    'a cold fact is rewritten in the cold part, a deal closed long ago moves cold, a reopened one hot, '
    'a new one goes where the horizon places it: one row each'
);
SELECT results_eq(
    $$SELECT rows_inserted, rows_updated FROM etl.loading_metadata
       WHERE run_id = $$ || :inc_run || $$ AND step = 'dwh.load_fact_sales_performance'$$,
    $$VALUES (1::bigint, 3::bigint)$$,
    'the step counts three facts rewritten (wherever they were) and one inserted'
);
SELECT etl.check_fact_storage(:inc_run, true);
SELECT set_eq(
    $$SELECT check_name, passed, actual FROM etl.validation_result WHERE run_id = $$ || :inc_run,
    $$VALUES ('one fact per opportunity across the hot and cold parts', true, '0'),
             ('facts are stored where the horizon places them', true, '0')$$,
    'the window check passes'
);
SELECT tests.end_run();

-- The horizon move -----------------------------------------------------------------------------
UPDATE etl.config SET value = '2017-04-01' WHERE key = 'cold_horizon';
SELECT tests.open_step('horizon_move', 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance') AS m1 \gset
SELECT is(dwh.move_fact_batch(:m1), NULL, 'a later horizon: one batch moves what it makes cold, and is done');
SELECT tests.running_run() AS move1 \gset
SELECT set_eq(
    $$SELECT opportunity_id FROM dwh.fact_sales_performance WHERE is_cold$$,
    $$VALUES ('K1'), ('K2'), ('K4'), ('K9')$$,
    'K4, closed on 2017-03-01, is cold now; K5, open, stays hot'
);
SELECT is((SELECT cold_before FROM etl.fact_storage), '2017-04-01'::date, 'the move sets the horizon in force');
SELECT is((SELECT run_id FROM etl.fact_storage), :move1::bigint, '... recording its run');
SELECT results_eq(
    $$SELECT rows_in, rows_updated, resume_after FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :m1,
    $$VALUES (1::bigint, 1::bigint, '2017-04-01')$$,
    'its step counts one fact moved, with the horizon'
);
SELECT tests.end_run();

UPDATE etl.config SET value = '2017-02-01' WHERE key = 'cold_horizon';
SELECT tests.open_step('horizon_move', 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance');
UPDATE etl.run SET batch_size = 1 WHERE status = 'running';
SELECT is(tests.run_unit('horizon_move', 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance',
                         'dwh.move_fact_batch'), 3,
          'an earlier horizon, batches of one: two facts come back hot, one per batch, and a third call finds none');
SELECT tests.running_run() AS move2 \gset
SELECT set_eq(
    $$SELECT opportunity_id FROM dwh.fact_sales_performance WHERE is_cold$$,
    $$VALUES ('K2'), ('K9')$$,
    'K1 (closed 2017-02-10) and K4 are hot again; K2 and K9 stay cold'
);
SELECT etl.check_fact_storage(:move2, false);
SELECT is((SELECT count(*)::integer FROM etl.validation_result WHERE run_id = :move2 AND passed), 2,
          'after the move the whole check passes');
SELECT tests.end_run();

SELECT tests.open_step('horizon_move', 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance') AS m3 \gset
SELECT is(dwh.move_fact_batch(:m3), NULL, 'the same horizon again is done at once');
SELECT is((SELECT rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = :m3), 0::bigint,
          'and moves nothing: a fact in its place is never moved twice');
SELECT tests.end_run();

UPDATE etl.config SET value = 'none' WHERE key = 'cold_horizon';
SELECT tests.run_unit('horizon_move', 'dwh.move_facts_across_horizon', 'dwh.fact_sales_performance',
                      'dwh.move_fact_batch');
SELECT is((SELECT count(*)::integer FROM dwh.fact_sales_performance WHERE is_cold), 0,
          'with no horizon every fact comes back hot');
SELECT tests.end_run();

-- The whole check sees what the trigger would have refused -------------------------------------
ALTER TABLE dwh.fact_sales_performance DISABLE TRIGGER one_fact_per_opportunity_insert;
SELECT pg_temp.copy_fact('dwh.fact_sales_performance', 'K1', 'true') \gexec
SELECT tests.open_step('horizon_move', 'etl.validate_run', 'etl.validation_result');
SELECT tests.running_run() AS move4 \gset
SELECT etl.check_fact_storage(:move4, false);
SELECT results_eq(
    $$SELECT passed, actual, details FROM etl.validation_result
       WHERE run_id = $$ || :move4 || $$ AND check_name = 'one fact per opportunity across the hot and cold parts'$$,
    $$VALUES (false, '1', '["K1"]'::jsonb)$$,
    'a deal with a fact in both parts fails the check, named'
);
SELECT results_eq(
    $$SELECT passed, actual FROM etl.validation_result
       WHERE run_id = $$ || :move4 || $$ AND check_name = 'facts are stored where the horizon places them'$$,
    $$VALUES (false, '1')$$,
    'and its cold copy is out of place (no horizon)'
);

SELECT * FROM finish();
ROLLBACK;
