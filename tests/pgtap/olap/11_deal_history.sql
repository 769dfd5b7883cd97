-- The deal history: its schema, its step in both pipelines, the initial
-- load's seed (a view over the facts), a hand-built window applied by the
-- unit (one row per changing transaction, a transaction changing a deal twice
-- making one row, a change of nothing tracked making none, a delete closing
-- the history), the same window applied again adding nothing, and the as-of
-- functions over the summaries, readable by b2b_reader.
BEGIN;
SELECT plan(43);

-- Schema contract --------------------------------------------------------------
SELECT has_table('dwh', 'fact_deal_history', 'dwh.fact_deal_history holds the deals'' history');
SELECT is(
    (SELECT pg_get_indexdef(i.indexrelid) FROM pg_index AS i
      WHERE i.indrelid = 'dwh.fact_deal_history'::regclass AND i.indisunique),
    'CREATE UNIQUE INDEX fact_deal_history_key_idx ON dwh.fact_deal_history USING btree (md5(opportunity_id), valid_from)',
    'a deal has one history row per valid_from (by its key''s md5: keys may be long): a window applied again meets its own rows'
);
SELECT has_view('dwh', 'deal_history_seed', 'dwh.deal_history_seed is the initial load''s seed, made from the facts');
SELECT has_view('dwh', 'v_deal_history', 'dwh.v_deal_history is the whole history: table and seed');
SELECT is(
    (SELECT array_agg(t.t ORDER BY t.t) FROM unnest(ARRAY[
        'dwh.fact_deal_history', 'dwh.deal_pipeline_day', 'dwh.deal_pipeline_month', 'dwh.deal_stage_duration',
        'dwh.deal_stage_conversion']) AS t (t)
      WHERE tests.uncommented(t.t::regclass) IS NOT NULL),
    NULL, 'the history and its summaries carry a comment on the table and every column'
);
SELECT function_returns('dwh', 'apply_deal_history', ARRAY['bigint'], 'text',
                        'dwh.apply_deal_history(step) is a unit returning text');
SELECT is_procedure('dwh', 'load_deal_history', ARRAY['bigint'], 'dwh.load_deal_history(run) is a procedure');
SELECT results_eq(
    $$SELECT pipeline, step FROM etl.pipeline_step
       WHERE step IN ('dwh.load_deal_history', 'dwh.load_fact_sales_performance') ORDER BY pipeline, position$$,
    $$VALUES ('incremental_update', 'dwh.load_deal_history'), ('incremental_update', 'dwh.load_fact_sales_performance'),
             ('initial_load', 'dwh.load_fact_sales_performance'), ('initial_load', 'dwh.load_deal_history')$$,
    'the history step runs before the facts in an incremental update (it copies a deal''s seed first), after them in an initial load'
);
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc AS p
      WHERE p.oid IN ('dwh.open_pipeline_as_of(date)'::regprocedure, 'dwh.stage_durations(date, date)'::regprocedure,
                      'dwh.stage_conversion(date)'::regprocedure)
        AND p.provolatile = 's' AND p.prosecdef AND obj_description(p.oid, 'pg_proc') IS NOT NULL),
    ARRAY['dwh.open_pipeline_as_of(date)', 'dwh.stage_conversion(date)', 'dwh.stage_durations(date,date)'],
    'the as-of functions are stable, owner-rights and documented'
);

-- Run 1: an initial load; its seed ------------------------------------------------------------
SELECT tests.stage_small_source();
--                   id    stage         engage        close         value  account product agent
SELECT tests.stage_deal('H1', 'Won',       '2017-01-10', '2017-02-10', 1000,  1,      1,      1);
SELECT tests.stage_deal('H2', 'Engaging',  '2017-02-01', NULL,         NULL,  2,      1,      2);
SELECT tests.stage_deal('H3', 'Lost',      '2017-01-15', '2017-03-05', 0,     1,      2,      1);
SELECT tests.stage_deal('H4', 'Prospecting', NULL,       NULL,         NULL,  NULL,   2,      2);
SELECT tests.stage_deal('H5', 'Won',       '2017-03-01', '2017-03-01', 300,   3,      2,      2);
SELECT tests.load_staged('initial_load') AS run1 \gset
UPDATE etl.run SET window_applied = true WHERE run_id = :run1;
SELECT tests.end_run();
SELECT source_snapshot_at AS snap1 FROM etl.run WHERE run_id = :run1 \gset

SELECT is((SELECT count(*)::integer FROM dwh.fact_deal_history), 0,
          'the initial load writes no history rows: the seed is a view over the facts');
SELECT results_eq(
    $$SELECT h.opportunity_id, s.deal_stage_name, h.valid_from, h.valid_to, h.close_value, h.entered_stage
        FROM dwh.v_deal_history AS h JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE h.opportunity_id IN ('H1', 'H5') ORDER BY 1, 3$$,
    $$VALUES ('H1', 'Engaging', '2017-01-10 00:00 UTC'::timestamptz, '2017-02-10 00:00 UTC'::timestamptz, NULL::numeric, true),
             ('H1', 'Won', '2017-02-10 00:00 UTC', 'infinity', 1000, true),
             ('H5', 'Won', '2017-03-01 00:00 UTC', 'infinity', 300, true)$$,
    'a closed deal is Engaging from its engage date to its close date, then closed; engaged and closed the same day: closed only'
);
SELECT is(
    (SELECT h.valid_from FROM dwh.v_deal_history AS h WHERE h.opportunity_id = 'H4'), :'snap1'::timestamptz,
    'a deal without dates starts at the load''s snapshot time'
);
SELECT is(
    (SELECT h.valid_from FROM dwh.v_deal_history AS h WHERE h.opportunity_id = 'H2'), '2017-02-01 00:00 UTC'::timestamptz,
    'an open deal is in its stage from its engage date'
);
SELECT results_eq(
    $$SELECT deal_stage, sales_agent, product, open_deals FROM dwh.open_pipeline_as_of('2017-02-09')$$,
    $$VALUES ('Engaging', 'Darcel Schlecht', 'GTX Basic', 1::bigint),
             ('Engaging', 'Moses Frase', 'GTX Basic', 1::bigint),
             ('Engaging', 'Moses Frase', 'MG Special', 1::bigint)$$,
    'the open pipeline at the end of 2017-02-09: H1 (closes on the 10th), H2, H3'
);
SELECT results_eq(
    $$SELECT deal_stage, sales_agent, open_deals FROM dwh.open_pipeline_as_of('2017-02-10')$$,
    $$VALUES ('Engaging', 'Darcel Schlecht', 1::bigint), ('Engaging', 'Moses Frase', 1::bigint)$$,
    'a deal that closed on a day is not in that day''s pipeline'
);
SELECT throws_ok(
    $$SELECT * FROM dwh.open_pipeline_as_of(NULL)$$, '22004', 'dwh.open_pipeline_as_of: the day is NULL',
    'a NULL day is refused, not answered with no rows'
);
SELECT throws_ok(
    $$SELECT * FROM dwh.open_pipeline_as_of('1990-01-01')$$, '22023', NULL,
    'a day before the history starts is refused, not answered as an empty pipeline'
);
SELECT ok(
    (SELECT sum(open_value) > 0 FROM dwh.open_pipeline_as_of('2017-02-09')),
    'the open pipeline is valued at list price (open deals carry no close value)'
);
SELECT results_eq(
    $$SELECT from_stage, entered, to_stage, converted, conversion_rate FROM dwh.stage_conversion('2017-01-20')$$,
    $$VALUES ('Engaging', 2::bigint, 'Lost', 1::bigint, 0.5), ('Engaging', 2::bigint, 'Won', 1::bigint, 0.5)$$,
    'January''s entries into Engaging (H1, H3): one went on to Won, one to Lost'
);
SELECT results_eq(
    $$SELECT product, sales_agent, closed_deals, median_days FROM dwh.stage_durations('2017-02-01', '2017-03-01')$$,
    $$VALUES ('GTX Basic', NULL, 1::bigint, 31::double precision),
             ('GTX Basic', 'Moses Frase', 1::bigint, 31::double precision),
             ('MG Special', NULL, 2::bigint, 24.5::double precision),
             ('MG Special', 'Darcel Schlecht', 1::bigint, 0::double precision),
             ('MG Special', 'Moses Frase', 1::bigint, 49::double precision)$$,
    'stage durations of February and March: H1 31 days, H3 49, H5 0; each product over its agents first'
);
SELECT throws_ok(
    $$SELECT * FROM dwh.stage_durations(NULL)$$, '22004', 'dwh.stage_durations: the first month is NULL',
    'stage durations refuse a NULL first month'
);
SELECT throws_ok(
    $$SELECT * FROM dwh.stage_durations('2017-06-01', '2017-03-01')$$, '22023', NULL,
    'stage durations refuse a last month before the first, not answering with no rows'
);

-- Run 2: a window built by hand ---------------------------------------------------------------
-- H1: two transactions (agent, then value); H2: one transaction changing it
-- twice (Won, then another value): one row; H3: only its close date (nothing
-- tracked): no row; H4: deleted; H6: new.
SELECT tests.new_window();
SELECT tests.capture('sales_pipeline', 'U', 'H1', 901, '2090-01-05 10:00 UTC', jsonb_build_object(
    'opportunity_id', 'H1', 'sales_agent_id', 2, 'product_id', 1, 'account_id', 1, 'deal_stage', 'Won',
    'engage_date', '2017-01-10', 'close_date', '2017-02-10', 'close_value', 1000));
SELECT tests.capture('sales_pipeline', 'U', 'H2', 902, '2090-01-05 11:00 UTC', jsonb_build_object(
    'opportunity_id', 'H2', 'sales_agent_id', 2, 'product_id', 1, 'account_id', 2, 'deal_stage', 'Won',
    'engage_date', '2017-02-01', 'close_date', '2017-03-01', 'close_value', 10));
SELECT tests.capture('sales_pipeline', 'U', 'H2', 902, '2090-01-05 11:01 UTC', jsonb_build_object(
    'opportunity_id', 'H2', 'sales_agent_id', 2, 'product_id', 1, 'account_id', 2, 'deal_stage', 'Won',
    'engage_date', '2017-02-01', 'close_date', '2017-03-01', 'close_value', 20));
SELECT tests.capture('sales_pipeline', 'U', 'H1', 903, '2090-01-06 09:00 UTC', jsonb_build_object(
    'opportunity_id', 'H1', 'sales_agent_id', 2, 'product_id', 1, 'account_id', 1, 'deal_stage', 'Won',
    'engage_date', '2017-01-10', 'close_date', '2017-02-10', 'close_value', 1100));
SELECT tests.capture('sales_pipeline', 'U', 'H3', 904, '2090-01-06 10:00 UTC', jsonb_build_object(
    'opportunity_id', 'H3', 'sales_agent_id', 1, 'product_id', 2, 'account_id', 1, 'deal_stage', 'Lost',
    'engage_date', '2017-01-15', 'close_date', '2017-03-06', 'close_value', 0));
SELECT tests.capture('sales_pipeline', 'D', 'H4', 905, '2090-01-06 11:00 UTC');
SELECT tests.capture('sales_pipeline', 'I', 'H6', 906, '2090-01-06 12:00 UTC', jsonb_build_object(
    'opportunity_id', 'H6', 'sales_agent_id', 1, 'product_id', 2, 'account_id', 3, 'deal_stage', 'Engaging',
    'engage_date', '2017-05-01', 'close_date', NULL, 'close_value', NULL));
-- The window's snapshot: the deals' last states. (The changes' times lie after
-- the load's snapshot time, now(), as a real window's do.)
SELECT tests.stage_deal('H1', 'Won', '2017-01-10', '2017-02-10', 1100, 1, 1, 2);
SELECT tests.stage_deal('H2', 'Won', '2017-02-01', '2017-03-01', 20, 2, 1, 2);
SELECT tests.stage_deal('H3', 'Lost', '2017-01-15', '2017-03-06', 0, 1, 2, 1);
SELECT tests.stage_deal('H6', 'Engaging', '2017-05-01', NULL, NULL, 3, 2, 1);
INSERT INTO etl.stage_deleted (table_name, row_key, deleted_at) VALUES ('sales_pipeline', 'H4', '2090-01-06 11:00 UTC');
SELECT tests.open_step('incremental_update', 'dwh.load_deal_history', 'dwh.fact_deal_history') AS hist2 \gset
SELECT tests.running_run() AS run2 \gset
SELECT is(dwh.apply_deal_history(:hist2), NULL, 'the history unit is done in one call (returns NULL)');
SELECT results_eq(
    $$SELECT h.opportunity_id, s.deal_stage_name, h.valid_from, h.valid_to, g.sales_agent_id, h.close_value,
             h.entered_stage, h.txid::text
        FROM dwh.fact_deal_history AS h JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
        JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
       WHERE h.opportunity_id = 'H1' ORDER BY h.valid_from$$,
    $$VALUES ('H1', 'Engaging', '2017-01-10 00:00 UTC'::timestamptz, '2017-02-10 00:00 UTC'::timestamptz, 1, NULL::numeric, true, NULL),
             ('H1', 'Won', '2017-02-10 00:00 UTC', '2090-01-05 10:00 UTC', 1, 1000, true, NULL),
             ('H1', 'Won', '2090-01-05 10:00 UTC', '2090-01-06 09:00 UTC', 2, 1000, false, '901'),
             ('H1', 'Won', '2090-01-06 09:00 UTC', 'infinity', 2, 1100, false, '903')$$,
    'a deal''s first touch copies its seed; each changing transaction is a row from its changed_at, closing the one before'
);
SELECT results_eq(
    $$SELECT s.deal_stage_name, h.valid_from, h.close_value, h.entered_stage, h.change_id
        FROM dwh.fact_deal_history AS h JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE h.opportunity_id = 'H2' ORDER BY h.valid_from$$,
    $$VALUES ('Engaging', '2017-02-01 00:00 UTC'::timestamptz, NULL::numeric, true, NULL::bigint),
             ('Won', '2090-01-05 11:01 UTC', 20, true, 3)$$,
    'a transaction changing a deal twice is one row, from its last changed_at, with its last image'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.fact_deal_history WHERE opportunity_id = 'H3' AND txid IS NOT NULL), 0,
    'a change of nothing tracked (the close date) makes no row'
);
SELECT results_eq(
    $$SELECT valid_to FROM dwh.fact_deal_history WHERE opportunity_id = 'H4'$$,
    $$VALUES ('2090-01-06 11:00 UTC'::timestamptz)$$,
    'a delete closes the deal''s history at its changed_at'
);
SELECT results_eq(
    $$SELECT s.deal_stage_name, h.valid_from, h.valid_to FROM dwh.fact_deal_history AS h
        JOIN dwh.dim_deal_stage AS s USING (deal_stage_key) WHERE h.opportunity_id = 'H6'$$,
    $$VALUES ('Engaging', '2090-01-06 12:00 UTC'::timestamptz, 'infinity'::timestamptz)$$,
    'a new deal starts at its insert''s changed_at'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.v_deal_history WHERE opportunity_id IN ('H1', 'H2', 'H3', 'H4')),
    (SELECT count(*)::integer FROM dwh.fact_deal_history WHERE opportunity_id IN ('H1', 'H2', 'H3', 'H4')),
    'the touched deals'' history is the table''s rows: their seed is not counted twice'
);
SELECT results_eq(
    $$SELECT count(*)::integer, count(*) FILTER (WHERE txid IS NULL)::integer FROM dwh.v_deal_history
       WHERE opportunity_id = 'H5'$$,
    $$VALUES (1, 1)$$,
    'an untouched deal''s history is still its seed'
);

-- The same window again (a run that died before the aggregate step) ---------------------------------
CREATE TEMPORARY TABLE history_once ON COMMIT DROP AS SELECT * FROM dwh.fact_deal_history;
CREATE TEMPORARY TABLE pipeline_once ON COMMIT DROP AS
SELECT day, deal_stage_key, sales_agent_key, product_id, deals, open_value FROM dwh.deal_pipeline_day
 WHERE deals <> 0 OR open_value <> 0;
SELECT tests.open_step('incremental_update', 'dwh.load_deal_history', 'dwh.fact_deal_history') AS hist2b \gset
SELECT is(dwh.apply_deal_history(:hist2b), NULL, 'the same window applied again');
SELECT set_eq(
    $$SELECT opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, close_value, txid::text
        FROM dwh.fact_deal_history$$,
    $$SELECT opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, close_value, txid::text
        FROM history_once$$,
    'a window applied again leaves the history as once: no row added, none changed'
);
SELECT set_eq(
    $$SELECT day, deal_stage_key, sales_agent_key, product_id, deals, open_value FROM dwh.deal_pipeline_day
       WHERE deals <> 0 OR open_value <> 0$$,
    'SELECT * FROM pipeline_once',
    'and its summaries as once (the history before and after it are equal)'
);
SELECT results_eq(
    $$SELECT deal_stage, sales_agent, open_deals FROM dwh.open_pipeline_as_of('2090-01-05')$$,
    $$VALUES ('Prospecting', 'Darcel Schlecht', 1::bigint)$$,
    'the open pipeline at the end of 2090-01-05: H4 (deleted the next day); H2 closed'
);
SELECT results_eq(
    $$SELECT deal_stage, sales_agent, open_deals FROM dwh.open_pipeline_as_of('2090-01-06')$$,
    $$VALUES ('Engaging', 'Moses Frase', 1::bigint)$$,
    'at the end of 2090-01-06: H6 (new), not H4 (deleted)'
);
SELECT results_eq(
    $$SELECT from_stage, entered, to_stage, converted FROM dwh.stage_conversion('2090-01-01')$$,
    $$VALUES ('Engaging', 1::bigint, NULL::text, NULL::bigint), ('Won', 1::bigint, NULL, NULL)$$,
    'January 2090''s entries: H6 into Engaging, H2 into Won (H1 stayed Won: no entry)'
);

-- The unit's guard, and the readers -----------------------------------------------------------------
SELECT tests.end_run();
SELECT throws_ok(
    format('SELECT dwh.apply_deal_history(%s)', :hist2),
    '55000', NULL, 'the unit refuses a step that is not running (etl.assert_step_executor)'
);
SET ROLE b2b_reader;
SELECT lives_ok($$SELECT * FROM dwh.open_pipeline_as_of('2017-02-09')$$, 'b2b_reader reads the open pipeline as of a day');
SELECT lives_ok($$SELECT * FROM dwh.stage_durations('2017-02-01', '2017-03-01')$$, 'b2b_reader reads stage durations');
SELECT lives_ok($$SELECT * FROM dwh.stage_conversion('2017-01-01')$$, 'b2b_reader reads stage conversion');
SELECT lives_ok($$SELECT count(*) FROM dwh.v_deal_history$$, 'b2b_reader reads the deal history');
SELECT throws_ok($$SELECT dwh.fold_deal_history()$$, '42501', NULL,
                 'b2b_reader cannot fold history rows into the summaries');
RESET ROLE;
SET ROLE b2b_etl;
SELECT throws_ok($$SELECT * FROM dwh.open_pipeline_as_of('2017-02-09')$$, '42501', NULL,
                 'b2b_etl may only run the pipeline: not the readers'' functions');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
