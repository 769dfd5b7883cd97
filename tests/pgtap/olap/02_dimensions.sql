-- Dimensions: the SCD2 invariants dim_product enforces itself, the SCD1
-- upserts of accounts and agents, product versions, and the calendar.
-- The unit functions run inside this file's transaction on hand-staged rows
-- (the committing step procedures around them are tested by the pipeline).
BEGIN;
SELECT plan(61);

-- Schema contract --------------------------------------------------------------
SELECT has_table('dwh', 'dim_account', 'dim_account exists');
SELECT has_table('dwh', 'dim_sales_agent', 'dim_sales_agent exists');
SELECT has_table('dwh', 'dim_product', 'dim_product exists');
SELECT has_table('dwh', 'dim_date', 'dim_date exists');

-- SCD2 invariants, enforced by dim_product itself ----------------------------------
INSERT INTO dwh.dim_product (product_id, product_name, series, sales_price, valid_from, valid_to, is_current)
VALUES (900, 'Guard', 'G', 10, '-infinity', '2017-01-01 00:00+00', false),
       (900, 'Guard', 'G', 12, '2017-01-01 00:00+00', 'infinity', true);

SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from) VALUES (900, 'Guard', '2018-01-01 00:00+00')$$,
    '23P01', NULL,
    'a second current version of a product is rejected (it overlaps the current one)'
);
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from, valid_to, is_current)
      VALUES (900, 'Guard', '2016-06-01 00:00+00', '2016-09-01 00:00+00', false)$$,
    '23P01', NULL,
    'a version whose period overlaps another version of the same product is rejected'
);
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from, valid_to, is_current)
      VALUES (901, 'Backwards', '2018-01-01 00:00+00', '2017-01-01 00:00+00', false)$$,
    '23514', NULL,
    'a version that ends before it starts is rejected'
);
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from, valid_to, is_current)
      VALUES (901, 'Empty', '2017-01-01 00:00+00', '2017-01-01 00:00+00', false)$$,
    '23514', NULL,
    'a version that ends where it starts (an empty period) is rejected'
);
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from, valid_to, is_current)
      VALUES (901, 'Closed but current', '2017-01-01 00:00+00', '2018-01-01 00:00+00', true)$$,
    '23514', NULL,
    'a closed version cannot be flagged current'
);
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from) VALUES (NULL, 'Nameless', '-infinity')$$,
    '23514', NULL,
    'only the Unknown member (-1) may lack a business key'
);
SELECT lives_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from, valid_to, is_current)
      VALUES (901, 'Adjacent', '-infinity', '2018-01-01 00:00+00', false),
             (901, 'Adjacent', '2018-01-01 00:00+00', 'infinity', true)$$,
    'a version may start exactly where the previous one ends (periods are half-open)'
);
DELETE FROM dwh.dim_product WHERE product_id IN (900, 901);

-- SCD1: dwh.upsert_dim_account and dwh.upsert_dim_sales_agent -------------------------
SELECT tests.stage_small_source();
-- Staged in reverse business-key order: surrogate keys must still follow account_id.
WITH d AS (DELETE FROM etl.stage_accounts RETURNING *)
INSERT INTO etl.stage_accounts SELECT * FROM d ORDER BY account_id DESC;

-- Run 1: an initial load.
SELECT tests.open_step('initial_load', 'dwh.load_dim_account', 'dwh.dim_account') AS acc1 \gset
SELECT tests.running_run() AS run1 \gset
SELECT is(dwh.upsert_dim_account(:acc1), NULL, 'the account unit is done in one call (returns NULL)');
SELECT set_eq(
    $$SELECT account_id, account_name, sector, year_established, revenue, employees, office_location,
             parent_account_id
        FROM dwh.dim_account WHERE account_key <> -1$$,
    $$SELECT * FROM etl.stage_accounts$$,
    'every staged account is inserted with all its attributes'
);
SELECT is(
    (SELECT array_agg(account_id ORDER BY account_key) FROM dwh.dim_account WHERE account_key <> -1),
    ARRAY[1, 2, 3],
    'account surrogate keys are given in business-key order (a rebuild gives the same keys)'
);
SELECT ok(
    (SELECT bool_and(NOT is_deleted AND run_id = :run1) FROM dwh.dim_account WHERE account_key <> -1),
    'new accounts are live and stamped with the run that wrote them'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated, rows_rejected, batches FROM etl.loading_metadata
       WHERE loading_metadata_id = $$ || :acc1,
    $$VALUES (3::bigint, 3::bigint, 0::bigint, 0::bigint, 1)$$,
    'the account step records 3 rows in, 3 inserted, none updated, in one batch'
);

INSERT INTO etl.stage_sales_agents (sales_agent_id, sales_agent_name, manager_name, regional_office)
SELECT 3, 'Zane Levy', 'Summer Sewald', 'West';
SELECT tests.open_step('initial_load', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent') AS agt1 \gset
SELECT is(dwh.upsert_dim_sales_agent(:agt1), NULL, 'the agent unit is done in one call (returns NULL)');
SELECT set_eq(
    $$SELECT sales_agent_id, sales_agent_name, manager_name, regional_office
        FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1 AND NOT is_deleted AND run_id = $$ || :run1,
    $$SELECT * FROM etl.stage_sales_agents$$,
    'every staged agent is inserted, live, with its attributes and the run''s id'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :agt1,
    $$VALUES (3::bigint, 3::bigint, 0::bigint)$$,
    'the agent step records 3 rows in, 3 inserted, none updated'
);

SELECT updated_at AS acc2_updated_at FROM dwh.dim_account WHERE account_id = 2 \gset
SELECT updated_at AS agt2_updated_at FROM dwh.dim_sales_agent WHERE sales_agent_id = 2 \gset
SELECT account_key AS acc1_key FROM dwh.dim_account WHERE account_id = 1 \gset

-- Run 2: an incremental update that changes account 1 and agent 1 and adds one of each.
SELECT tests.end_run();
UPDATE etl.stage_accounts SET sector = NULL, revenue = 2000.5 WHERE account_id = 1;
INSERT INTO etl.stage_accounts (account_id, account_name, sector) VALUES (4, 'Dambase', 'marketing');
UPDATE etl.stage_sales_agents SET manager_name = 'Rocco Neubert' WHERE sales_agent_id = 1;
INSERT INTO etl.stage_sales_agents (sales_agent_id, sales_agent_name) VALUES (4, 'Ana Blanc');
SELECT tests.open_step('incremental_update', 'dwh.load_dim_account', 'dwh.dim_account') AS acc2 \gset
SELECT tests.running_run() AS run2 \gset
SELECT dwh.upsert_dim_account(:acc2);

SELECT results_eq(
    $$SELECT account_key, sector, revenue, run_id FROM dwh.dim_account WHERE account_id = 1$$,
    format('VALUES (%s, NULL::text, 2000.5::numeric, %s::bigint)', :acc1_key, :run2),
    'a changed account is overwritten in place (SCD1: same key, a value may become NULL)'
);
SELECT results_eq(
    $$SELECT run_id, updated_at FROM dwh.dim_account WHERE account_id = 2$$,
    format('VALUES (%s::bigint, %L::timestamptz)', :run1, :'acc2_updated_at'),
    'an unchanged account is not touched (its run_id and updated_at stay)'
);
SELECT ok(
    (SELECT account_key > (SELECT max(account_key) FROM dwh.dim_account WHERE account_id <> 4)
       FROM dwh.dim_account WHERE account_id = 4 AND run_id = :run2),
    'a new account gets the next surrogate key and the run''s id'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :acc2,
    $$VALUES (4::bigint, 1::bigint, 1::bigint)$$,
    'the account step counts 4 in, 1 inserted, 1 updated (the unchanged ones are not counted)'
);

SELECT tests.open_step('incremental_update', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent') AS agt2 \gset
SELECT dwh.upsert_dim_sales_agent(:agt2);
SELECT results_eq(
    $$SELECT manager_name, run_id FROM dwh.dim_sales_agent WHERE sales_agent_id = 1$$,
    format('VALUES (%L, %s::bigint)', 'Rocco Neubert', :run2),
    'a changed agent is overwritten in place (SCD1)'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_sales_agent WHERE sales_agent_id = 1), 1,
    'an SCD1 change keeps one row per agent'
);
SELECT results_eq(
    $$SELECT run_id, updated_at FROM dwh.dim_sales_agent WHERE sales_agent_id = 2$$,
    format('VALUES (%s::bigint, %L::timestamptz)', :run1, :'agt2_updated_at'),
    'an unchanged agent is not touched (its run_id and updated_at stay)'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :agt2,
    $$VALUES (4::bigint, 1::bigint, 1::bigint)$$,
    'the agent step counts 4 in, 1 inserted, 1 updated'
);

-- Run 3: rows deleted in the warehouse come back when the source has them again.
SELECT tests.end_run();
UPDATE dwh.dim_account SET is_deleted = true WHERE account_id = 3;
UPDATE dwh.dim_sales_agent SET is_deleted = true WHERE sales_agent_id = 3;
SELECT tests.open_step('incremental_update', 'dwh.load_dim_account', 'dwh.dim_account') AS acc3 \gset
SELECT tests.running_run() AS run3 \gset
SELECT dwh.upsert_dim_account(:acc3);
SELECT results_eq(
    $$SELECT is_deleted, run_id FROM dwh.dim_account WHERE account_id = 3$$,
    format('VALUES (false, %s::bigint)', :run3),
    'an account marked deleted that is staged again is revived'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :acc3,
    $$VALUES (4::bigint, 0::bigint, 1::bigint)$$,
    'a revival counts as one update'
);
SELECT is(
    (SELECT run_id FROM dwh.dim_account WHERE account_id = 2), :run1::bigint,
    'an account unchanged over three runs still carries the run that wrote it'
);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent') AS agt3 \gset
SELECT dwh.upsert_dim_sales_agent(:agt3);
SELECT results_eq(
    $$SELECT is_deleted, run_id FROM dwh.dim_sales_agent WHERE sales_agent_id = 3$$,
    format('VALUES (false, %s::bigint)', :run3),
    'an agent marked deleted that is staged again is revived'
);

-- SCD2: dwh.apply_product_versions --------------------------------------------------
SELECT tests.end_run();
-- A new initial load (run 4) versions the staged products from -infinity.
SELECT tests.open_step('initial_load', 'dwh.load_dim_product', 'dwh.dim_product') AS prd1 \gset
SELECT tests.running_run() AS run4 \gset
SELECT is(dwh.apply_product_versions(:prd1), NULL, 'the product unit is done in one call (returns NULL)');
SELECT set_eq(
    $$SELECT product_id, product_name, series, sales_price, valid_from, valid_to, is_current
        FROM dwh.dim_product WHERE product_key <> -1$$,
    $$SELECT product_id, product_name, series, sales_price, '-infinity'::timestamptz AS valid_from,
             'infinity'::timestamptz AS valid_to, true AS is_current
        FROM etl.stage_products$$,
    'the initial load gives each product one current version, valid from -infinity'
);
SELECT is(
    (SELECT array_agg(product_id ORDER BY product_key) FROM dwh.dim_product WHERE product_key <> -1),
    ARRAY[1, 2],
    'product surrogate keys are given in business-key order'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :prd1,
    $$VALUES (2::bigint, 2::bigint, 0::bigint)$$,
    'the product step counts 2 in, 2 inserted'
);

-- Run 5, incremental: product 1's price changes, product 2 is renamed, product 3
-- is new. Versions come from the window's changes (etl.change_window), each
-- valid from its transaction's changed_at; the stage holds the net state.
SELECT tests.end_run();
SELECT product_key AS p2_key FROM dwh.dim_product WHERE product_id = 2 \gset
SELECT tests.new_window();
--                           op   id txid  changed_at             name                  series  price
SELECT tests.capture_product('U', 1, 5001, '2017-06-15 12:00+00', 'GTX Basic',          'GTX',  600);
SELECT tests.capture_product('U', 2, 5002, '2017-06-15 12:30+00', 'MG Special Edition', 'MG',   55);
SELECT tests.capture_product('I', 3, 5003, '2017-06-15 13:00+00', 'GTK 500',            'GTK',  26768);
INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES
(1, 'GTX Basic', 'GTX', 600), (2, 'MG Special Edition', 'MG', 55), (3, 'GTK 500', 'GTK', 26768);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product') AS prd2 \gset
SELECT tests.running_run() AS run5 \gset
-- The run's snapshot time is not a version's start: the change's own time is.
UPDATE etl.run SET source_snapshot_at = '2017-12-31 00:00+00' WHERE run_id = :run5;
SELECT dwh.apply_product_versions(:prd2);

SELECT results_eq(
    $$SELECT sales_price, valid_from, valid_to, is_current FROM dwh.dim_product
       WHERE product_id = 1 ORDER BY valid_from$$,
    $$VALUES (550::numeric, '-infinity'::timestamptz, '2017-06-15 12:00+00'::timestamptz, false),
             (600::numeric, '2017-06-15 12:00+00'::timestamptz, 'infinity'::timestamptz, true)$$,
    'a price change closes the current version at the change''s time (changed_at) and opens a new one there'
);
SELECT results_eq(
    $$SELECT product_key, product_name, valid_from, is_current FROM dwh.dim_product WHERE product_id = 2$$,
    format('VALUES (%s, %L, %L::timestamptz, true)', :p2_key, 'MG Special Edition', '-infinity'),
    'a name change alone is written into the current version (no new version)'
);
SELECT results_eq(
    $$SELECT valid_from, valid_to, is_current, run_id FROM dwh.dim_product WHERE product_id = 3$$,
    format('VALUES (%L::timestamptz, %L::timestamptz, true, %s::bigint)', '2017-06-15 13:00+00', 'infinity', :run5),
    'a product new in an incremental run starts at its insert''s changed_at'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :prd2,
    $$VALUES (3::bigint, 2::bigint, 2::bigint)$$,
    'the product step counts 3 changes in, 2 versions inserted, 2 updated (one closed, one renamed)'
);

-- Run 6, incremental: product 2 was deleted (its version closed) and is back;
-- product 3 changes series; product 1 does not change.
SELECT tests.end_run();
UPDATE dwh.dim_product SET valid_to = '2017-08-01 00:00+00', is_current = false, is_deleted = true
 WHERE product_id = 2;
SELECT tests.new_window();
SELECT tests.capture_product('I', 2, 6001, '2017-09-01 00:00+00', 'MG Special Edition', 'MG',      55);
SELECT tests.capture_product('U', 3, 6002, '2017-09-01 00:00+00', 'GTK 500',            'GTK Pro', 26768);
INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES
(2, 'MG Special Edition', 'MG', 55), (3, 'GTK 500', 'GTK Pro', 26768);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product') AS prd3 \gset
SELECT tests.running_run() AS run6 \gset
SELECT dwh.apply_product_versions(:prd3);

SELECT results_eq(
    $$SELECT product_name, valid_from, valid_to, is_current, is_deleted FROM dwh.dim_product
       WHERE product_id = 2 ORDER BY valid_from$$,
    $$VALUES ('MG Special Edition'::text, '-infinity'::timestamptz, '2017-08-01 00:00+00'::timestamptz, false, true),
             ('MG Special Edition', '2017-09-01 00:00+00', 'infinity', true, false)$$,
    'a product with no current version (deleted, now back) gets a new live one; its history stays'
);
SELECT results_eq(
    $$SELECT series, valid_from, is_current FROM dwh.dim_product WHERE product_id = 3 ORDER BY valid_from$$,
    $$VALUES ('GTK'::text, '2017-06-15 13:00+00'::timestamptz, false),
             ('GTK Pro', '2017-09-01 00:00+00', true)$$,
    'a series change makes a new version too'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_product WHERE product_id = 1 AND run_id = :run6), 0,
    'an unchanged product''s versions are not touched'
);
SELECT is_empty(
    $$SELECT product_id FROM dwh.dim_product WHERE product_key <> -1
       GROUP BY product_id HAVING count(*) FILTER (WHERE is_current) <> 1$$,
    'after all these changes every product has exactly one current version'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_product WHERE product_key <> -1), 6,
    'the history holds six versions: two of product 1, two of 2, two of 3'
);
SELECT is(dwh.apply_product_versions(:prd3), NULL, 'applying the same window again is harmless');
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_product WHERE product_key <> -1), 6,
    'applying the same window again makes no new version'
);

-- The calendar: dwh.date_key, dwh.extend_dim_date ---------------------------------------
SELECT is(dwh.date_key(NULL), -1, 'the key of a missing date is Unknown (-1)');
SELECT is(dwh.date_key('2017-03-05'), 20170305, 'a date''s key is YYYYMMDD');

SELECT is(dwh.extend_dim_date('2020-12-28', '2021-01-04'), 8::bigint, 'extend_dim_date adds each missing day and counts them');
SELECT results_eq(
    $$SELECT date_key, full_date, day_of_month::integer, day_of_week::integer, day_name, is_weekend,
             iso_week::integer, iso_year::integer, month::integer, month_name, month_start_key,
             quarter::integer, year::integer
        FROM dwh.dim_date WHERE full_date IN ('2020-12-31', '2021-01-01', '2021-01-03', '2021-01-04')
       ORDER BY full_date$$,
    $$VALUES (20201231, '2020-12-31'::date, 31, 4, 'Thursday'::text, false, 53, 2020, 12, 'December'::text, 20201201, 4, 2020),
             (20210101, '2021-01-01', 1, 5, 'Friday', false, 53, 2020, 1, 'January', 20210101, 1, 2021),
             (20210103, '2021-01-03', 3, 7, 'Sunday', true, 53, 2020, 1, 'January', 20210101, 1, 2021),
             (20210104, '2021-01-04', 4, 1, 'Monday', false, 1, 2021, 1, 'January', 20210101, 1, 2021)$$,
    'calendar attributes are right: ISO day of week, weekend, ISO week and year, month start, quarter'
);
SELECT is(dwh.extend_dim_date('2020-12-30', '2021-01-06'), 2::bigint, 'extending over days already present adds only the missing ones');
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_date WHERE full_date BETWEEN '2020-12-28' AND '2021-01-06'), 10,
    'extend_dim_date is idempotent: each day appears once'
);
SELECT is(dwh.extend_dim_date('2021-02-01', '2021-01-01'), 0::bigint, 'an empty range (first after last) adds nothing');
SELECT is(dwh.extend_dim_date(NULL, '2021-01-01'), 0::bigint, 'a range with no start adds nothing');
SELECT is(dwh.extend_dim_date('2020-02-28', '2020-03-01'), 3::bigint, 'a leap year''s February 29 is a day of its own');

-- dwh.extend_dim_date_to_stage: staged dates, the margin, and date_min .. date_max.
DELETE FROM dwh.dim_date WHERE date_key <> -1;
UPDATE etl.config SET value = '5' WHERE key = 'date_margin_days';
SELECT tests.stage_deal('D1', 'Won', '2017-01-10', '2017-02-10');
SELECT tests.stage_deal('D2', 'Prospecting', NULL, NULL, NULL);
SELECT tests.stage_deal('D3', 'Won', '2017-01-20', '9999-12-31');
SELECT tests.stage_deal('D4', 'Lost', '1900-01-01', '2017-01-25', 0);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_date', 'dwh.dim_date') AS dat1 \gset
SELECT is(dwh.extend_dim_date_to_stage(:dat1), NULL, 'the calendar unit is done in one call (returns NULL)');
SELECT results_eq(
    $$SELECT min(full_date), max(full_date), count(*)::integer FROM dwh.dim_date WHERE date_key <> -1$$,
    $$VALUES ('2017-01-05'::date, '2017-02-15'::date, 42)$$,
    'dim_date covers the staged dates with date_margin_days on each side, ignoring dates outside date_min .. date_max'
);
SELECT is(
    (SELECT rows_inserted FROM etl.loading_metadata WHERE loading_metadata_id = :dat1), 42::bigint,
    'the calendar step counts the days it added'
);
UPDATE etl.config SET value = '366' WHERE key = 'date_margin_days';
UPDATE etl.config SET value = '2016-06-01' WHERE key = 'date_min';
UPDATE etl.config SET value = '2018-01-31' WHERE key = 'date_max';
SELECT dwh.extend_dim_date_to_stage(:dat1);
SELECT results_eq(
    $$SELECT min(full_date), max(full_date) FROM dwh.dim_date WHERE date_key <> -1$$,
    $$VALUES ('2016-06-01'::date, '2018-01-31'::date)$$,
    'the margin never takes dim_date beyond date_min or date_max'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_date WHERE year >= 2019 OR (year < 2016 AND date_key <> -1)), 0,
    'a staged date in year 9999 (or 1900) does not stretch dim_date'
);

-- Last, because it drops the exclusion constraint (rolled back with the file):
-- the partial unique index alone also refuses a second current version.
ALTER TABLE dwh.dim_product DROP CONSTRAINT dim_product_no_overlap;
SELECT throws_ok(
    $$INSERT INTO dwh.dim_product (product_id, product_name, valid_from) VALUES (1, 'Twin', '2030-01-01 00:00+00')$$,
    '23505', NULL,
    'the partial unique index alone refuses a second current version of a product'
);

SELECT * FROM finish();
ROLLBACK;
