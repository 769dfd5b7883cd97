-- The monthly aggregate and the checks that guard a run: the aggregate
-- equals its recomputation over closed, live deals; etl.validate passes a
-- consistent load, fails each kind of inconsistency, and keeps its results;
-- etl.check_run turns them into the step's outcome.
BEGIN;
SELECT plan(40);

-- Schema contract --------------------------------------------------------------
SELECT has_table('dwh', 'fact_sales_monthly_aggregate', 'the monthly aggregate exists');
SELECT col_is_pk('dwh', 'fact_sales_monthly_aggregate', ARRAY['month_date_key', 'sales_agent_key', 'product_key'],
                 'the aggregate''s grain is close month, sales agent and product');
SELECT has_view('dwh', 'monthly_aggregate_from_facts', 'the aggregate''s recomputation is a view');
SELECT function_returns('etl', 'validate', ARRAY['bigint'], 'setof etl.validation_result',
                        'etl.validate(run) returns its checks');

-- A consistent initial load -------------------------------------------------------
SELECT tests.stage_small_source();
--                   id    stage          engage        close         value   account product agent
SELECT tests.stage_deal('A1', 'Won',         '2017-01-10', '2017-02-10', 1000,   1, 1, 1);
SELECT tests.stage_deal('A2', 'Won',         '2017-01-12', '2017-02-20', 500.50, 2, 1, 1);
SELECT tests.stage_deal('A3', 'Lost',        '2017-01-15', '2017-02-25', 0,      3, 1, 1);
SELECT tests.stage_deal('A4', 'Won',         '2017-02-01', '2017-03-05', 300,    1, 2, 2);
SELECT tests.stage_deal('A5', 'Lost',        '2017-02-01', '2017-03-06', 0,      2, 1, 2);
SELECT tests.stage_deal('A6', 'Engaging',    '2017-02-10', NULL,         NULL,   1, 1, 1);
SELECT tests.stage_deal('A7', 'Prospecting', NULL,         NULL,         NULL,   NULL, 2, 1);
SELECT tests.stage_deal('A8', 'Won',         '2017-02-10', '2017-02-28', 200,    3, 1, 1);
SELECT tests.stage_deal('Q1', 'Negotiating');
SELECT tests.load_staged('initial_load') AS run1 \gset

-- The monthly aggregate ---------------------------------------------------------------
SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value
        FROM dwh.fact_sales_monthly_aggregate$$,
    $$SELECT * FROM dwh.monthly_aggregate_from_facts$$,
    'the rebuilt aggregate equals dwh.monthly_aggregate_from_facts'
);
SELECT set_eq(
    $$SELECT d.full_date, g.sales_agent_id, p.product_id, a.won_deals, a.lost_deals, a.won_value
        FROM dwh.fact_sales_monthly_aggregate AS a
        JOIN dwh.dim_date AS d ON d.date_key = a.month_date_key
        JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
        JOIN dwh.dim_product AS p USING (product_key)$$,
    $$VALUES ('2017-02-01'::date, 1, 1, 3, 1, 1700.50::numeric(18, 2)),
             ('2017-03-01', 2, 2, 1, 0, 300),
             ('2017-03-01', 2, 1, 0, 1, 0)$$,
    'one row per close month (its first day), agent and product: won and lost deals, won value'
);
SELECT is(
    (SELECT sum(won_deals + lost_deals)::integer FROM dwh.fact_sales_monthly_aggregate), 6,
    'open deals count in no group: only the six closed deals are aggregated'
);
SELECT ok(
    (SELECT bool_and(run_id = :run1) FROM dwh.fact_sales_monthly_aggregate),
    'aggregate rows carry the run that built them'
);
SELECT results_eq(
    $$SELECT m.rows_inserted, m.rows_deleted FROM etl.loading_metadata AS m
       WHERE m.run_id = $$ || :run1 || $$ AND m.step = 'dwh.load_fact_sales_monthly_aggregate'$$,
    $$VALUES (3::bigint, 0::bigint)$$,
    'the aggregate step counts the groups it wrote'
);

-- etl.validate and etl.check_run on the consistent load ------------------------------------
SELECT set_eq(
    format('SELECT check_name, passed FROM etl.validate(%s)', :run1),
    $$VALUES ('every source row is loaded or quarantined', true),
             ('deal stages reconcile with the source (rows and close values)', true),
             ('dimensions hold every source account, agent and product', true),
             ('every fact key resolves to a dimension row', true),
             ('every live product has exactly one current version', true),
             ('product versions never overlap', true),
             ('monthly aggregate equals its recomputation from the facts', true),
             ('product summary equals its recomputation from the facts', true),
             ('account summary equals its recomputation from the facts', true),
             ('open pipeline summary equals its recomputation from the facts', true),
             ('stage duration summary equals its recomputation from the facts', true),
             ('summaries agree with each other and with the monthly aggregate', true),
             ('the deal history''s as-of pipeline over all time equals the open pipeline, per stage and per product', true),
             ('the deal history''s as-of pipeline months equal the sums of their days', true),
             ('the deal history''s stage conversions are counts no larger than the entries they follow', true),
             ('one fact per opportunity across the hot and cold parts', true),
             ('facts are stored where the horizon places them', true)$$,
    'a consistent initial load passes all seventeen checks'
);
SELECT set_eq(
    format('SELECT check_name, passed, expected, actual FROM etl.validation_result WHERE run_id = %s', :run1),
    format('SELECT check_name, passed, expected, actual FROM etl.validate(%s)', :run1),
    'etl.validate stores the checks it returns in etl.validation_result'
);
SELECT is(
    (SELECT count(*)::integer FROM etl.validation_result WHERE run_id = :run1), 17,
    'validating a run again replaces its results instead of adding to them'
);
SELECT is(
    (SELECT actual FROM etl.validation_result
      WHERE run_id = :run1 AND check_name = 'every source row is loaded or quarantined'),
    '9',
    'the row check counts loaded and quarantined deals (8 + 1 of 9 staged)'
);
SELECT tests.open_step('initial_load', 'etl.validate_run', 'etl.validation_result') AS val1 \gset
SELECT is(etl.check_run(:val1), NULL, 'etl.check_run returns NULL (done) when every check passed');
SELECT results_eq(
    $$SELECT rows_in, rows_inserted FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :val1,
    $$VALUES (17::bigint, 17::bigint)$$,
    'the validation step counts the checks it ran'
);

-- A tampered fact: the aggregate and the summaries no longer match, nor does the source.
UPDATE dwh.fact_sales_performance SET close_value = 999 WHERE opportunity_id = 'A1';
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed', :run1),
    $$VALUES ('deal stages reconcile with the source (rows and close values)'),
             ('monthly aggregate equals its recomputation from the facts'),
             ('product summary equals its recomputation from the facts'),
             ('account summary equals its recomputation from the facts')$$,
    'a close value changed after the aggregate was built fails the aggregate, summary and reconciliation checks'
);
SELECT is(
    (SELECT details FROM etl.validation_result
      WHERE run_id = :run1 AND check_name = 'monthly aggregate equals its recomputation from the facts'),
    jsonb_build_array(jsonb_build_object(
        'month_date_key', 20170201,
        'sales_agent_key', (SELECT sales_agent_key FROM dwh.dim_sales_agent WHERE sales_agent_id = 1),
        'product_key', (SELECT product_key FROM dwh.dim_product WHERE product_id = 1))),
    'the failed aggregate check names the group that differs'
);
SELECT is(
    etl.check_run(:val1),
    'validation failed: deal stages reconcile with the source (rows and close values); '
    'monthly aggregate equals its recomputation from the facts; '
    'product summary equals its recomputation from the facts; '
    'account summary equals its recomputation from the facts',
    'etl.check_run names the failed checks'
);
SELECT is(
    (SELECT count(*)::integer FROM etl.validation_result WHERE run_id = :run1 AND NOT passed), 4,
    'failed checks are kept in etl.validation_result'
);
UPDATE dwh.fact_sales_performance SET close_value = 1000 WHERE opportunity_id = 'A1';

-- A staged deal neither loaded nor quarantined.
SELECT tests.stage_deal('LATE', 'Won', '2017-01-10', '2017-02-10', 10);
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed', :run1),
    $$VALUES ('every source row is loaded or quarantined'),
             ('deal stages reconcile with the source (rows and close values)')$$,
    'a staged deal that is neither loaded nor quarantined fails the row and reconciliation checks'
);
SELECT results_eq(
    format($q$SELECT expected, actual FROM etl.validation_result
               WHERE run_id = %s AND check_name = 'every source row is loaded or quarantined'$q$, :run1),
    $$VALUES ('10'::text, '9'::text)$$,
    'the failed row check shows staged against loaded plus quarantined'
);
DELETE FROM etl.stage_sales_pipeline WHERE opportunity_id = 'LATE';

-- A fact whose key points at no dimension row, written while its foreign
-- key was set aside: an initial load puts the keys back NOT VALID
-- (etl.restore_ddl), and validation proves them. (PostgreSQL 15 has no NOT
-- VALID foreign key on a partitioned table, so the facts' keys come back
-- valid; a NOT VALID one on the part that holds the fact stands in.)
SELECT tableoid::regclass AS a1_part FROM dwh.fact_sales_performance WHERE opportunity_id = 'A1' \gset
ALTER TABLE dwh.fact_sales_performance DROP CONSTRAINT fact_sales_performance_account_key_fkey;
UPDATE dwh.fact_sales_performance SET account_key = 424242 WHERE opportunity_id = 'A1';
ALTER TABLE :a1_part ADD CONSTRAINT fact_sales_performance_account_key_fkey
    FOREIGN KEY (account_key) REFERENCES dwh.dim_account (account_key) NOT VALID;
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed', :run1),
    $$VALUES ('every fact key resolves to a dimension row'),
             ('account summary equals its recomputation from the facts')$$,
    'a dangling dimension key fails the key check (and the account summary''s: the fact left its account)'
);
SELECT is(
    (SELECT details -> 'broken' -> 0 ->> 'constraint' FROM etl.validation_result
      WHERE run_id = :run1 AND check_name = 'every fact key resolves to a dimension row'),
    'fact_sales_performance_account_key_fkey',
    'the failed key check names the foreign key that does not hold'
);
UPDATE dwh.fact_sales_performance SET account_key = (SELECT account_key FROM dwh.dim_account WHERE account_id = 1)
 WHERE opportunity_id = 'A1';
SELECT is(
    (SELECT passed FROM etl.validate(:run1) WHERE check_name = 'every fact key resolves to a dimension row'),
    true, 'once the key resolves, validation validates the foreign key and the check passes'
);
SELECT ok(
    (SELECT convalidated FROM pg_constraint WHERE conname = 'fact_sales_performance_account_key_fkey'),
    'the foreign key is validated in the catalog'
);
ALTER TABLE :a1_part DROP CONSTRAINT fact_sales_performance_account_key_fkey;
ALTER TABLE dwh.fact_sales_performance ADD CONSTRAINT fact_sales_performance_account_key_fkey
    FOREIGN KEY (account_key) REFERENCES dwh.dim_account (account_key);

-- A live product left without a current version.
UPDATE dwh.dim_product SET valid_to = '2017-12-31 00:00+00', is_current = false WHERE product_id = 2;
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed', :run1),
    $$VALUES ('every live product has exactly one current version'),
             ('dimensions hold every source account, agent and product')$$,
    'a live product without a current version fails the SCD2 and dimension checks'
);
SELECT is(
    (SELECT details FROM etl.validation_result
      WHERE run_id = :run1 AND check_name = 'every live product has exactly one current version'),
    '[2]'::jsonb,
    'the failed SCD2 check names the product'
);
UPDATE dwh.dim_product SET valid_to = 'infinity', is_current = true WHERE product_id = 2;

-- A staged account missing from its dimension.
INSERT INTO etl.stage_accounts (account_id, account_name) VALUES (4, 'Late Corp');
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed', :run1),
    $$VALUES ('dimensions hold every source account, agent and product')$$,
    'a staged account missing from dim_account fails the dimension check'
);
DELETE FROM etl.stage_accounts WHERE account_id = 4;

SELECT is(
    (SELECT count(*)::integer FROM etl.validate(:run1) WHERE passed), 17,
    'once every tampering is undone the run validates again'
);

-- Deleted facts leave the aggregate ------------------------------------------------------
UPDATE dwh.fact_sales_performance SET is_deleted = true WHERE opportunity_id = 'A8';
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_monthly_aggregate', 'dwh.fact_sales_monthly_aggregate')
    AS agg1 \gset
SELECT is(dwh.rebuild_monthly_aggregate(:agg1), NULL, 'the aggregate unit is done in one call (returns NULL)');
SELECT results_eq(
    $$SELECT a.won_deals, a.lost_deals, a.won_value FROM dwh.fact_sales_monthly_aggregate AS a
       WHERE a.month_date_key = 20170201$$,
    $$VALUES (2, 1, 1500.50::numeric(18, 2))$$,
    'a fact marked deleted is excluded from the aggregate'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.fact_sales_monthly_aggregate), 3,
    'a rebuild replaces the aggregate''s rows instead of adding to them'
);
SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value
        FROM dwh.fact_sales_monthly_aggregate$$,
    $$SELECT * FROM dwh.monthly_aggregate_from_facts$$,
    'after the rebuild the aggregate equals its recomputation again'
);
SELECT is(
    (SELECT passed FROM etl.validate(:run1)
      WHERE check_name = 'monthly aggregate equals its recomputation from the facts'),
    true,
    'the aggregate check passes over deleted facts'
);
UPDATE dwh.fact_sales_performance SET is_deleted = true WHERE opportunity_id = 'A4';
SELECT is(
    (SELECT passed FROM etl.validate(:run1)
      WHERE check_name = 'monthly aggregate equals its recomputation from the facts'),
    false,
    'a fact deleted after the aggregate was built fails the aggregate check'
);
UPDATE dwh.fact_sales_performance SET is_deleted = false WHERE opportunity_id IN ('A4', 'A8');
-- Incremental runs maintain the aggregate by deltas: start them from a consistent one.
DELETE FROM dwh.fact_sales_monthly_aggregate;
INSERT INTO dwh.fact_sales_monthly_aggregate (
    month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value, run_id
)
SELECT m.*, :run1 FROM dwh.monthly_aggregate_from_facts AS m;
SELECT dwh.build_summaries(:run1);

-- Other runs ---------------------------------------------------------------------------------
SELECT throws_ok('SELECT * FROM etl.validate(-42)', '22023', 'run -42 does not exist',
                 'validating a run that does not exist is an error (22023)');
SELECT tests.end_run();
-- An incremental run whose window deleted deal A8 and changed A2's value: its
-- stage holds only the changed deal (the initial load's stage is set aside).
CREATE TEMPORARY TABLE initial_stage ON COMMIT DROP AS SELECT * FROM etl.stage_sales_pipeline;
DELETE FROM etl.stage_sales_pipeline;
SELECT tests.stage_deal('A2', 'Won', '2017-01-12', '2017-02-20', 600, 2, 1, 1);
INSERT INTO etl.stage_deleted (table_name, row_key, deleted_at) VALUES ('sales_pipeline', 'A8', now());
SELECT tests.open_step('incremental_update', 'etl.validate_run', 'etl.validation_result') AS val2 \gset
SELECT tests.running_run() AS run2 \gset
SELECT tests.run_unit('incremental_update', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                      'dwh.insert_fact_batch');
SELECT tests.run_unit('incremental_update', 'dwh.load_fact_sales_monthly_aggregate',
                      'dwh.fact_sales_monthly_aggregate', 'dwh.rebuild_monthly_aggregate');
SELECT set_eq(
    format('SELECT check_name, passed FROM etl.validate(%s) WHERE check_name !~ ''^the deal history''', :run2),
    $$VALUES ('every fact key resolves to a dimension row', true),
             ('every live product has exactly one current version', true),
             ('product versions never overlap', true),
             ('refreshed aggregate groups equal their recomputation from the facts', true),
             ('every changed deal is loaded as in the source, quarantined or deleted', true),
             ('deals engaged in a product version the run wrote are on it', true),
             ('refreshed product summary groups equal their recomputation from the facts', true),
             ('refreshed account summary groups equal their recomputation from the facts', true),
             ('refreshed open pipeline summary groups equal their recomputation from the facts', true),
             ('refreshed stage duration summary groups equal their recomputation from the facts', true),
             ('summaries agree with each other and with the monthly aggregate', true),
             ('one fact per opportunity across the hot and cold parts', true),
             ('facts are stored where the horizon places them', true)$$,
    'an incremental run is checked on what its window touched (its stage is not the whole source): thirteen checks pass'
);
DELETE FROM etl.stage_deleted;
DELETE FROM etl.stage_sales_pipeline;
INSERT INTO etl.stage_sales_pipeline SELECT * FROM initial_stage;
SELECT is(
    (SELECT count(*)::integer FROM etl.validation_result WHERE run_id = :run1), 17,
    'validating one run leaves another run''s results alone'
);

-- A source value with more than two decimals: the fact rounds it to cents
-- (numeric(18,2)); the load kept every row, so the run should still validate.
SELECT tests.end_run();
SELECT dwh.clear_star_schema();
SELECT tests.stage_deal('CENT', 'Won', '2017-01-10', '2017-02-10', 100.005);
SELECT tests.load_staged('initial_load') AS run3 \gset
SELECT is(
    (SELECT close_value FROM dwh.fact_sales_performance WHERE opportunity_id = 'CENT'), 100.01::numeric,
    'a sub-cent close value is stored rounded to cents'
);
SELECT is_empty(
    format('SELECT check_name, expected, actual FROM etl.validate(%s) WHERE NOT passed', :run3),
    'a load that kept every row validates even when a source value has more than two decimals'
);

SELECT * FROM finish();
ROLLBACK;
