-- The incremental update, unit by unit: the change window pulled from a real
-- source (snapshot visibility, net staging, the refusals), SCD2 product
-- versions from hand-built windows, deletes and revivals in the SCD1
-- dimensions, the facts of changed, deleted and quarantined deals, the
-- refresh of the aggregate groups they touched, and the incremental checks.
-- The unit functions run inside this file's transaction; the source behind
-- src.* is this file's own throwaway database, where a second session
-- (dblink) commits the transactions a window is made of.
BEGIN;
SELECT plan(59);

-- Schema contract --------------------------------------------------------------
SELECT has_table('etl', 'change_window', 'etl.change_window holds the changes a run pulled');
SELECT has_table('etl', 'stage_deleted', 'etl.stage_deleted holds the keys a window deleted');
SELECT col_is_pk('etl', 'touched_group', ARRAY['month_date_key', 'sales_agent_key', 'product_key'],
                 'etl.touched_group holds each aggregate group to refresh once');
SELECT ok(
    (SELECT c.relpersistence = 'p' FROM pg_class AS c WHERE c.oid = 'etl.touched_group'::regclass),
    'etl.touched_group is logged: a crash between the fact and aggregate steps does not forget a group'
);
SELECT function_returns('etl', 'stage_change_window', ARRAY['bigint'], 'text',
                        'etl.stage_change_window(step) is a unit returning text');

-- No incremental update without a successful initial load --------------------------------
SELECT tests.open_step('incremental_update', 'etl.pull_change_window', 'etl.change_window') AS pull0 \gset
SELECT throws_ok(
    format('SELECT etl.stage_change_window(%s)', :pull0),
    '55000', 'no incremental update without a successful initial load (latest: none)',
    'a window cannot be pulled before any initial load (55000)'
);
SELECT tests.end_run('failed');
SELECT tests.open_step('initial_load', 'etl.extract_source', 'etl.stage_accounts');
SELECT tests.end_run('failed') AS failed_load \gset
SELECT tests.open_step('incremental_update', 'etl.pull_change_window', 'etl.change_window') AS pull0 \gset
SELECT throws_ok(
    format('SELECT etl.stage_change_window(%s)', :pull0),
    '55000', format('no incremental update without a successful initial load (latest: run %s, failed)', :failed_load),
    'a window cannot be pulled when the latest initial load failed (55000)'
);
SELECT tests.end_run('failed');

-- The source's transactions, committed by other sessions (dblink) ----------------------------
-- Before anything in this file reads src.*: the remote snapshot of this
-- transaction is taken by its first read, and must see them all.
SELECT count(*) > 0 AS has_dblink FROM pg_available_extensions WHERE name = 'dblink' \gset
\if :has_dblink
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT tests.second_session('w1', tests.source_dbname())
   AND tests.second_session('w2', tests.source_dbname())
   AND tests.second_session('w3', tests.source_dbname()) AS crm \gset
\else
SELECT false AS crm \gset
\endif
\if :crm
-- Never wait for a lock in the source: fail instead.
SELECT dblink_exec(c, 'SET lock_timeout = ''10s''') FROM unnest(ARRAY['w1', 'w2', 'w3']) AS c;
-- Present before every snapshot: two products, an agent.
SELECT dblink_exec('w2', $$INSERT INTO public.products (product_id, product_name, series, sales_price)
                           VALUES (21, 'Win One', 'W', 100), (22, 'Win Two', 'W', 200)$$);
SELECT dblink_exec('w2', $$INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name) VALUES (21, 'Win Agent')$$);
SELECT s AS s0 FROM dblink('w2', 'SELECT pg_current_snapshot()::text') AS t (s text) \gset
-- After s0: an emptied table (b2bdwh generate or import-csv would do that).
SELECT dblink_exec('w2', 'TRUNCATE public.sales_pipeline');
-- A: starts before the last applied snapshot, commits after it.
SELECT dblink_exec('w1', 'BEGIN');
SELECT dblink_exec('w1', 'UPDATE public.products SET sales_price = 110 WHERE product_id = 21');
-- B: commits before the last applied snapshot (which the initial load applied).
SELECT dblink_exec('w2', $$UPDATE public.products SET series = 'W2' WHERE product_id = 22$$);
SELECT s AS s_prev FROM dblink('w2', 'SELECT pg_current_snapshot()::text') AS t (s text) \gset
SELECT dblink_exec('w1', 'COMMIT');
-- C, D (two updates of one row), E (a delete), F (a deal): after it.
SELECT dblink_exec('w2', $$INSERT INTO public.products (product_id, product_name, series, sales_price)
                           VALUES (23, 'Win Three', 'W', 300)$$);
SELECT dblink_exec('w2', 'BEGIN');
SELECT dblink_exec('w2', 'UPDATE public.products SET sales_price = 120 WHERE product_id = 21');
SELECT dblink_exec('w2', 'UPDATE public.products SET sales_price = 130 WHERE product_id = 21');
SELECT dblink_exec('w2', 'COMMIT');
SELECT dblink_exec('w2', 'DELETE FROM public.products WHERE product_id = 22');
SELECT dblink_exec('w2', $$INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, deal_stage)
                           VALUES ('W1', 21, 21, 'Prospecting')$$);
-- G: still running when the window is pulled.
SELECT dblink_exec('w3', 'BEGIN');
SELECT dblink_exec('w3', 'UPDATE public.products SET sales_price = 999 WHERE product_id = 23');
\endif

-- Run 1: an initial load of a hand-staged source -----------------------------------------------
SELECT tests.stage_small_source();
INSERT INTO etl.stage_sales_agents (sales_agent_id, sales_agent_name, manager_name, regional_office)
VALUES (3, 'Zane Levy', 'Summer Sewald', 'West');
INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES
(11, 'Alpha', 'A', 100), (12, 'Beta', 'B', 200), (13, 'Gamma', 'G', 300), (14, 'Delta', 'D', 400),
-- the source's products as the last applied snapshot (s_prev) has them
(21, 'Win One', 'W', 100), (22, 'Win Two', 'W2', 200);
--                   id    stage        engage        close         value  account product agent
SELECT tests.stage_deal('F1', 'Won',      '2017-01-10', '2017-02-10', 1000,  1,      1,      1);
SELECT tests.stage_deal('F2', 'Engaging', '2017-02-01', NULL,         NULL,  2,      1,      2);
SELECT tests.stage_deal('F3', 'Won',      '2017-01-15', '2017-03-05', 500,   1,      2,      1);
SELECT tests.stage_deal('F4', 'Lost',     '2017-01-20', '2017-02-20', 0,     3,      1,      1);
SELECT tests.stage_deal('F5', 'Won',      '2017-01-05', '2017-04-10', 700,   2,      2,      2);
SELECT tests.load_staged('initial_load') AS run1 \gset
\if :crm
UPDATE etl.run SET source_snapshot = :'s_prev'::pg_snapshot WHERE run_id = :run1;
\endif
-- As etl.close_run leaves a successful initial load: its snapshot is applied.
UPDATE etl.run SET window_applied = true WHERE run_id = :run1;
SELECT tests.end_run();
SELECT product_key AS p1 FROM dwh.dim_product WHERE product_id = 1 \gset
SELECT product_key AS p2 FROM dwh.dim_product WHERE product_id = 2 \gset
SELECT sales_agent_key AS ag1 FROM dwh.dim_sales_agent WHERE sales_agent_id = 1 \gset
SELECT sales_agent_key AS ag2 FROM dwh.dim_sales_agent WHERE sales_agent_id = 2 \gset

-- Run 2: the window pulled from the real source ------------------------------------------------
\if :crm
SELECT tests.open_step('incremental_update', 'etl.pull_change_window', 'etl.change_window') AS pull2 \gset
SELECT tests.running_run() AS run2 \gset
SELECT is(etl.stage_change_window(:pull2), NULL, 'the pull unit is done in one call (returns NULL)');
SELECT set_eq(
    $$SELECT table_name, operation::text, row_key, row_data ->> 'sales_price' FROM etl.change_window$$,
    $$VALUES ('products'::text, 'U'::text, '21'::text, '110'::text),
             ('products', 'I', '23', '300'),
             ('products', 'U', '21', '120'),
             ('products', 'U', '21', '130'),
             ('products', 'D', '22', NULL),
             ('sales_pipeline', 'I', 'W1', NULL)$$,
    'the window holds exactly the changes of the transactions committed since the last applied snapshot'
);
SELECT ok(
    (SELECT w.change_id < (SELECT c.change_id FROM src.change_log AS c
                            WHERE c.row_key = '22' AND c.operation = 'U')
       FROM etl.change_window AS w WHERE w.row_key = '21' AND w.row_data ->> 'sales_price' = '110'),
    'a transaction running at the last snapshot and committed after it is caught, although its change id is older than one that snapshot saw'
);
SELECT is_empty(
    $$SELECT FROM etl.change_window WHERE row_data ->> 'sales_price' = '999'$$,
    'a transaction still running when the window is pulled is left for the next window'
);
SELECT set_eq(
    $$SELECT product_id, product_name, series, sales_price FROM etl.stage_products$$,
    $$VALUES (21, 'Win One'::text, 'W'::text, 130::numeric), (23, 'Win Three', 'W', 300)$$,
    'each changed row is staged once, as the window''s snapshot has it (the last of two updates; not the running change)'
);
SELECT results_eq(
    $$SELECT d.table_name, d.row_key, d.deleted_at = w.changed_at
        FROM etl.stage_deleted AS d JOIN etl.change_window AS w USING (table_name, row_key)$$,
    $$VALUES ('products'::text, '22'::text, true)$$,
    'a row whose last change is a delete is staged as deleted, at the delete''s time, and not as a row'
);
SELECT results_eq(
    $$SELECT opportunity_id, sales_agent_id, product_id, deal_stage FROM etl.stage_sales_pipeline$$,
    $$VALUES ('W1'::text, 21, 21, 'Prospecting'::text)$$,
    'a changed deal is read back from the source by its key'
);
SELECT results_eq(
    format($q$SELECT r.changes_in_window, r.source_snapshot IS NOT NULL, r.source_snapshot_at IS NOT NULL,
                     pg_snapshot_xmin(r.source_snapshot) >= pg_snapshot_xmin(%L::pg_snapshot), m.rows_in
                FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
               WHERE m.loading_metadata_id = %s$q$, :'s_prev', :pull2),
    $$VALUES (6::bigint, true, true, true, 6::bigint)$$,
    'the run records its snapshot (the next window starts there) and the step counts the 6 changes'
);

SELECT changed_at AS a_at FROM etl.change_window WHERE row_key = '21' AND row_data ->> 'sales_price' = '110' \gset
SELECT changed_at AS d_at FROM etl.change_window WHERE row_key = '21' AND row_data ->> 'sales_price' = '130' \gset
SELECT changed_at AS c_at FROM etl.change_window WHERE row_key = '23' \gset
SELECT changed_at AS e_at FROM etl.change_window WHERE row_key = '22' \gset
SELECT tests.run_unit('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions');
SELECT results_eq(
    $$SELECT product_id, sales_price, valid_from, valid_to, is_current, is_deleted FROM dwh.dim_product
       WHERE product_id IN (21, 22, 23) ORDER BY product_id, valid_from$$,
    format($q$VALUES (21, 100::numeric, '-infinity'::timestamptz, %1$L::timestamptz, false, false),
                     (21, 110, %1$L, %2$L, false, false),
                     (21, 130, %2$L, 'infinity', true, false),
                     (22, 200, '-infinity', %4$L, false, true),
                     (23, 300, %3$L, 'infinity', true, false)$q$,
           :'a_at', :'d_at', :'c_at', :'e_at'),
    'the real window gives a version per committed transaction, valid from its last changed_at; the delete closes 22'
);

-- The window holds a TRUNCATE when it starts before it (here: at s0).
UPDATE etl.run SET source_snapshot = :'s0'::pg_snapshot WHERE run_id = :run1;
SELECT throws_ok(
    format('SELECT etl.stage_change_window(%s)', :pull2),
    '55000', 'the source was replaced since the last load (sales_pipeline emptied)',
    'a window holding a TRUNCATE is refused (55000): the source was replaced, an initial load is due'
);
UPDATE etl.run SET source_snapshot = :'s_prev'::pg_snapshot WHERE run_id = :run1;
SELECT dblink_exec('w3', 'ROLLBACK');
SELECT dblink_disconnect('w1'), dblink_disconnect('w2'), dblink_disconnect('w3');
SELECT tests.end_run('failed');
\else
-- No second session is a failure, not a skip: these tests must run.
SELECT fail('second sessions through dblink are needed to commit the source transactions of a window')
  FROM generate_series(1, 10);
\endif

-- Run 3: SCD2 from a hand-built window --------------------------------------------------------
SELECT tests.new_window();
--                           op   id  txid  changed_at               name         series price
-- Product 11: two transactions; the later change has the older transaction id.
SELECT tests.capture_product('U', 11, 2002, '2017-06-01 10:00+00', 'Alpha',     'A', 110);
SELECT tests.capture_product('U', 11, 2001, '2017-06-02 10:00+00', 'Alpha',     'A', 120);
-- Product 12: two updates in one transaction.
SELECT tests.capture_product('U', 12, 2003, '2017-06-03 10:00+00', 'Beta',      'B', 210);
SELECT tests.capture_product('U', 12, 2003, '2017-06-03 10:05+00', 'Beta',      'B', 220);
-- Product 13: renamed only.
SELECT tests.capture_product('U', 13, 2004, '2017-06-04 10:00+00', 'Gamma Ray', 'G', 300);
-- Product 14: deleted.
SELECT tests.capture_product('D', 14, 2005, '2017-06-05 10:00+00');
-- The window's net state, as etl.stage_change_window would stage it.
INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES
(11, 'Alpha', 'A', 120), (12, 'Beta', 'B', 220), (13, 'Gamma Ray', 'G', 300);
INSERT INTO etl.stage_deleted (table_name, row_key, deleted_at) VALUES ('products', '14', '2017-06-05 10:00+00');
SELECT product_key AS p13 FROM dwh.dim_product WHERE product_id = 13 \gset
SELECT tests.open_step('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product') AS prd3 \gset
SELECT tests.running_run() AS run3 \gset
SELECT is(dwh.apply_product_versions(:prd3), NULL, 'the product unit is done in one call (returns NULL)');

SELECT results_eq(
    $$SELECT sales_price, valid_from, valid_to, is_current FROM dwh.dim_product
       WHERE product_id = 11 ORDER BY valid_from$$,
    $$VALUES (100::numeric, '-infinity'::timestamptz, '2017-06-01 10:00+00'::timestamptz, false),
             (110, '2017-06-01 10:00+00', '2017-06-02 10:00+00', false),
             (120, '2017-06-02 10:00+00', 'infinity', true)$$,
    'two transactions changing a price make two versions in changed_at order (not txid order), with contiguous periods'
);
SELECT results_eq(
    $$SELECT sales_price, valid_from, valid_to, is_current FROM dwh.dim_product
       WHERE product_id = 12 ORDER BY valid_from$$,
    $$VALUES (200::numeric, '-infinity'::timestamptz, '2017-06-03 10:05+00'::timestamptz, false),
             (220, '2017-06-03 10:05+00', 'infinity', true)$$,
    'two updates in one transaction collapse into one version, from the transaction''s last change'
);
SELECT results_eq(
    $$SELECT product_key, product_name, valid_from, is_current, run_id FROM dwh.dim_product WHERE product_id = 13$$,
    format('VALUES (%s, %L, %L::timestamptz, true, %s::bigint)', :p13, 'Gamma Ray', '-infinity', :run3),
    'a name-only change is written into the current version (type 1): no new version'
);
SELECT results_eq(
    $$SELECT sales_price, valid_from, valid_to, is_current, is_deleted FROM dwh.dim_product WHERE product_id = 14$$,
    $$VALUES (400::numeric, '-infinity'::timestamptz, '2017-06-05 10:00+00'::timestamptz, false, true)$$,
    'a delete closes the current version at the delete''s time and marks it deleted: no current version is left'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :prd3,
    $$VALUES (6::bigint, 3::bigint, 4::bigint)$$,
    'the product step counts 6 changes in, 3 versions inserted, 4 updated (3 closed, 1 renamed)'
);

-- Run 4: run 3 died after its product step (its window was never marked
-- applied), so the next run pulls the same window again and applies it whole.
SELECT tests.end_run('failed');
SELECT tests.open_step('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product') AS prd4 \gset
SELECT lives_ok(
    format('SELECT dwh.apply_product_versions(%s)', :prd4),
    'a window applied again by the next run (after a run that died past its product step) is applied without error'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_product WHERE product_id BETWEEN 11 AND 14), 7,
    'a window applied again makes no new version (still 3 + 2 + 1 + 1 versions of products 11 to 14)'
);
SELECT tests.end_run();

-- Run 5: the deleted product comes back.
SELECT tests.new_window();
SELECT tests.capture_product('I', 14, 2006, '2017-07-01 09:00+00', 'Delta', 'D', 450);
INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES (14, 'Delta', 'D', 450);
SELECT tests.run_unit('incremental_update', 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions');
SELECT results_eq(
    $$SELECT sales_price, valid_from, valid_to, is_current, is_deleted FROM dwh.dim_product
       WHERE product_id = 14 ORDER BY valid_from$$,
    $$VALUES (400::numeric, '-infinity'::timestamptz, '2017-06-05 10:00+00'::timestamptz, false, true),
             (450, '2017-07-01 09:00+00', 'infinity', true, false)$$,
    'a re-inserted product opens a new live version from its insert; the deleted one stays closed'
);
SELECT is_empty(
    $$SELECT product_id FROM dwh.dim_product WHERE product_key <> -1
       GROUP BY product_id HAVING count(*) FILTER (WHERE is_current) <> 1 AND bool_or(NOT is_deleted)$$,
    'every live product has exactly one current version after these windows'
);
SELECT tests.end_run();

-- Run 6: accounts, agents and deals ----------------------------------------------------------
SELECT tests.new_window();
-- (These units read the stage alone; the window's changes are not needed.)
--                   id    stage          engage        close         value  account product agent
SELECT tests.stage_deal('F1', 'Won',         '2017-01-10', '2017-03-15', 1200,  1,      1,      1);
SELECT tests.stage_deal('F2', 'Won',         '2017-02-01', '2017-03-10', 800,   2,      1,      2);
SELECT tests.stage_deal('F3', 'Won',      '2017-01-15', '2017-03-05', 'NaN', 1,      2,      1);
SELECT tests.stage_deal('F6', 'Won',         '2017-02-01', '2017-03-20', 300,   1,      1,      1);
INSERT INTO etl.stage_deleted (table_name, row_key, deleted_at) VALUES
('sales_pipeline', 'F4', '2017-03-01 08:00+00'),
('accounts', '3', '2017-03-01 08:01+00'),
('sales_agents', '3', '2017-03-01 08:02+00');
SELECT account_key AS acc3_key FROM dwh.dim_account WHERE account_id = 3 \gset
SELECT sales_agent_key AS agt3_key FROM dwh.dim_sales_agent WHERE sales_agent_id = 3 \gset

SELECT tests.open_step('incremental_update', 'dwh.load_dim_account', 'dwh.dim_account') AS acc6 \gset
SELECT tests.running_run() AS run6 \gset
SELECT dwh.upsert_dim_account(:acc6);
SELECT results_eq(
    $$SELECT d.is_deleted, d.run_id, m.rows_deleted
        FROM dwh.dim_account AS d, etl.loading_metadata AS m
       WHERE d.account_id = 3 AND m.loading_metadata_id = $$ || :acc6,
    format('VALUES (true, %s::bigint, 1::bigint)', :run6),
    'an account the window deleted is marked deleted (kept, never erased) and counted'
);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent') AS agt6 \gset
SELECT dwh.upsert_dim_sales_agent(:agt6);
SELECT results_eq(
    $$SELECT d.is_deleted, d.run_id, m.rows_deleted
        FROM dwh.dim_sales_agent AS d, etl.loading_metadata AS m
       WHERE d.sales_agent_id = 3 AND m.loading_metadata_id = $$ || :agt6,
    format('VALUES (true, %s::bigint, 1::bigint)', :run6),
    'an agent the window deleted is marked deleted and counted'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_account WHERE is_deleted) + (SELECT count(*)::integer FROM dwh.dim_sales_agent WHERE is_deleted),
    2,
    'only the deleted account and agent are marked deleted'
);

SELECT tests.open_step('incremental_update', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS fct6 \gset
SELECT is(dwh.insert_fact_batch(:fct6), NULL, 'the fact unit applies a small window in one call (returns NULL)');
SELECT results_eq(
    $$SELECT f.opportunity_id, s.deal_stage_name, f.close_date_key, f.close_value, f.is_deleted, f.run_id
        FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
       WHERE f.opportunity_id IN ('F1', 'F2', 'F6') ORDER BY f.opportunity_id$$,
    format($q$VALUES ('F1'::text, 'Won'::text, 20170315, 1200::numeric(18, 2), false, %1$s::bigint),
                     ('F2', 'Won', 20170310, 800, false, %1$s),
                     ('F6', 'Won', 20170320, 300, false, %1$s)$q$, :run6),
    'a changed deal''s fact is replaced (new stage, date, value) and a new deal gets one, all stamped with the run'
);
SELECT results_eq(
    $$SELECT opportunity_id, is_deleted, run_id FROM dwh.fact_sales_performance
       WHERE opportunity_id IN ('F3', 'F4', 'F5') ORDER BY opportunity_id$$,
    format($q$VALUES ('F3'::text, true, %1$s::bigint), ('F4', true, %1$s), ('F5', false, %2$s)$q$, :run6, :run1),
    'a deleted deal''s fact and a newly quarantined deal''s old fact are marked deleted; an unchanged deal is not touched'
);
SELECT results_eq(
    format($q$SELECT business_key, message FROM etl.error_log
               WHERE run_id = %s AND kind = 'quarantine'$q$, :run6),
    $$VALUES ('F3'::text, 'close_value NaN cannot be stored (not a number: it would poison every sum)'::text)$$,
    'the deal whose value no column holds now is quarantined with its reason'
);
SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key FROM etl.touched_group$$,
    format($q$VALUES (20170201, %1$s, %3$s), (20170301, %1$s, %3$s), (-1, %2$s, %3$s), (20170301, %2$s, %3$s),
                     (20170301, %1$s, %4$s)$q$, :ag1, :ag2, :p1, :p2),
    'the groups the changed deals left and entered, of the deleted deal and of the retired fact, are recorded in etl.touched_group'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated, rows_deleted, rows_rejected FROM etl.loading_metadata
       WHERE loading_metadata_id = $$ || :fct6,
    $$VALUES (4::bigint, 1::bigint, 2::bigint, 1::bigint, 1::bigint)$$,
    'the fact step counts 4 in, 1 new, 2 replaced, 1 deleted, 1 quarantined'
);

-- An untouched group set wrong on purpose: the refresh must not even look at it.
UPDATE dwh.fact_sales_monthly_aggregate SET won_value = 1
 WHERE month_date_key = 20170401 AND sales_agent_key = :ag2 AND product_key = :p2;
SELECT tests.open_step('incremental_update', 'dwh.load_fact_sales_monthly_aggregate',
                       'dwh.fact_sales_monthly_aggregate') AS agg6 \gset
SELECT is(dwh.rebuild_monthly_aggregate(:agg6), NULL, 'the aggregate unit is done in one call (returns NULL)');
SELECT set_eq(
    format($q$SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value
                FROM dwh.fact_sales_monthly_aggregate WHERE run_id = %s$q$, :run6),
    format($q$VALUES (20170301, %1$s, %3$s, 2, 0, 1500::numeric(18, 2)), (20170301, %2$s, %3$s, 1, 0, 800)$q$,
           :ag1, :ag2, :p1),
    'the touched groups that still have closed live deals are recomputed from the facts'
);
SELECT is_empty(
    format($q$SELECT FROM dwh.fact_sales_monthly_aggregate
               WHERE (month_date_key, sales_agent_key, product_key) IN ((20170201, %1$s, %2$s), (20170301, %1$s, %3$s))$q$,
           :ag1, :p1, :p2),
    'a touched group left without closed live deals is removed'
);
SELECT results_eq(
    format($q$SELECT won_value, run_id FROM dwh.fact_sales_monthly_aggregate
               WHERE month_date_key = 20170401 AND sales_agent_key = %s AND product_key = %s$q$, :ag2, :p2),
    format('VALUES (1::numeric(18, 2), %s::bigint)', :run1),
    'a group no changed deal touched is not recomputed (it keeps even a wrong value, and its run)'
);
SELECT is_empty($$SELECT FROM etl.touched_group WHERE refreshed_by_run IS DISTINCT FROM $$ || :run6,
                'the refresh leaves no group pending: each is kept, marked with the run, for its validation');
SELECT results_eq(
    format($q$SELECT r.window_applied, m.rows_in, m.rows_inserted, m.rows_deleted
                FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
               WHERE m.loading_metadata_id = %s$q$, :agg6),
    $$VALUES (true, 5::bigint, 5::bigint, 3::bigint)$$,
    'the refresh marks the run''s window applied and counts 5 groups, 5 deltas written, 3 emptied groups removed'
);
UPDATE dwh.fact_sales_monthly_aggregate SET won_value = 700
 WHERE month_date_key = 20170401 AND sales_agent_key = :ag2 AND product_key = :p2;

-- etl.validate on the incremental run -----------------------------------------------------------
SELECT set_eq(
    format('SELECT check_name, passed FROM etl.validate(%s) WHERE check_name !~ ''^the deal history''', :run6),
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
    'a consistent incremental run passes its thirteen checks'
);
SELECT results_eq(
    format($q$SELECT expected, actual FROM etl.validation_result
               WHERE run_id = %s AND check_name = 'every changed deal is loaded as in the source, quarantined or deleted'$q$,
           :run6),
    $$VALUES ('0 of 5'::text, '0'::text)$$,
    'the deal check covers the window''s 4 staged deals and its deleted one'
);
UPDATE etl.stage_sales_pipeline SET close_value = 1250 WHERE opportunity_id = 'F1';
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed AND check_name !~ ''^the deal history''', :run6),
    $$VALUES ('every changed deal is loaded as in the source, quarantined or deleted')$$,
    'a changed deal whose fact disagrees with the staged source row fails the deal check'
);
SELECT is(
    (SELECT details FROM etl.validation_result
      WHERE run_id = :run6 AND check_name = 'every changed deal is loaded as in the source, quarantined or deleted'),
    '["F1"]'::jsonb,
    'the failed deal check names the deal'
);
UPDATE etl.stage_sales_pipeline SET close_value = 1200 WHERE opportunity_id = 'F1';
UPDATE dwh.fact_sales_performance SET is_deleted = false WHERE opportunity_id = 'F4';
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed AND check_name !~ ''^the deal history''', :run6),
    $$VALUES ('every changed deal is loaded as in the source, quarantined or deleted'),
             ('refreshed aggregate groups equal their recomputation from the facts'),
             ('refreshed product summary groups equal their recomputation from the facts'),
             ('refreshed account summary groups equal their recomputation from the facts'),
             ('refreshed stage duration summary groups equal their recomputation from the facts')$$,
    'a deal deleted in the source whose fact is still live fails the deal check (and its groups'')'
);
UPDATE dwh.fact_sales_performance SET is_deleted = true WHERE opportunity_id = 'F4';
UPDATE dwh.fact_sales_monthly_aggregate SET won_deals = 3
 WHERE month_date_key = 20170301 AND sales_agent_key = :ag1 AND product_key = :p1;
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed AND check_name !~ ''^the deal history''', :run6),
    $$VALUES ('refreshed aggregate groups equal their recomputation from the facts'),
             ('summaries agree with each other and with the monthly aggregate')$$,
    'a refreshed group that differs from its recomputation fails the aggregate check (and the cross-check)'
);
UPDATE dwh.fact_sales_monthly_aggregate SET won_deals = 2
 WHERE month_date_key = 20170301 AND sales_agent_key = :ag1 AND product_key = :p1;
-- A refreshed group whose row went missing (as a faulty refresh would leave it).
DELETE FROM dwh.fact_sales_monthly_aggregate
 WHERE month_date_key = 20170301 AND sales_agent_key = :ag2 AND product_key = :p1;
SELECT set_eq(
    format('SELECT check_name FROM etl.validate(%s) WHERE NOT passed AND check_name !~ ''^the deal history''', :run6),
    $$VALUES ('refreshed aggregate groups equal their recomputation from the facts'),
             ('summaries agree with each other and with the monthly aggregate')$$,
    'a group holding deals the run loaded but missing from the aggregate fails the aggregate check (and the cross-check)'
);
INSERT INTO dwh.fact_sales_monthly_aggregate (
    month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value, run_id
) VALUES (20170301, :ag2, :p1, 1, 0, 800, :run6);
SELECT is(
    (SELECT count(*)::integer FROM etl.validate(:run6) WHERE passed AND check_name !~ '^the deal history'), 13,
    'once the tampering is undone the incremental run validates again'
);
SELECT tests.end_run();

-- Run 7: the deleted account and agent come back ------------------------------------------------
SELECT tests.new_window();
INSERT INTO etl.stage_accounts (account_id, account_name, sector) VALUES (3, 'Cancity', 'retail');
INSERT INTO etl.stage_sales_agents (sales_agent_id, sales_agent_name) VALUES (3, 'Zane Levy');
SELECT tests.open_step('incremental_update', 'dwh.load_dim_account', 'dwh.dim_account') AS acc7 \gset
SELECT tests.running_run() AS run7 \gset
SELECT dwh.upsert_dim_account(:acc7);
SELECT results_eq(
    $$SELECT account_key, is_deleted, sector, run_id FROM dwh.dim_account WHERE account_id = 3$$,
    format('VALUES (%s, false, %L, %s::bigint)', :acc3_key, 'retail', :run7),
    'an account inserted again after its delete is live again, under its old surrogate key'
);
SELECT tests.open_step('incremental_update', 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent') AS agt7 \gset
SELECT dwh.upsert_dim_sales_agent(:agt7);
SELECT results_eq(
    $$SELECT sales_agent_key, is_deleted, run_id FROM dwh.dim_sales_agent WHERE sales_agent_id = 3$$,
    format('VALUES (%s, false, %s::bigint)', :agt3_key, :run7),
    'an agent inserted again after its delete is live again, under its old surrogate key'
);
SELECT tests.stage_deal('F4', 'Lost', '2017-01-20', '2017-02-20', 0, 3, 1, 1);
SELECT tests.run_unit('incremental_update', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                      'dwh.insert_fact_batch');
SELECT results_eq(
    $$SELECT f.is_deleted, f.run_id, a.account_id FROM dwh.fact_sales_performance AS f
        JOIN dwh.dim_account AS a USING (account_key) WHERE f.opportunity_id = 'F4'$$,
    format('VALUES (false, %s::bigint, 3)', :run7),
    'a deleted deal inserted again is a live fact again (on its revived account)'
);
SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key FROM etl.touched_group
       WHERE refreshed_by_run IS NULL$$,
    format('VALUES (20170201, %s, %s)', :ag1, :p1),
    'the revived deal''s group is recorded for the refresh'
);
SELECT tests.run_unit('incremental_update', 'dwh.load_fact_sales_monthly_aggregate',
                      'dwh.fact_sales_monthly_aggregate', 'dwh.rebuild_monthly_aggregate');
SELECT set_eq(
    $$SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals, won_value
        FROM dwh.fact_sales_monthly_aggregate$$,
    $$SELECT * FROM dwh.monthly_aggregate_from_facts$$,
    'after these windows the whole aggregate equals its recomputation from the facts'
);
SELECT set_eq(
    $$SELECT product_key, deals, open_deals, won_deals, lost_deals, won_value, won_list_value, won_listed_deals,
             discounted_deals, discount, discount_rate, priced_won_value, priced_list_value
        FROM dwh.fact_sales_product_summary$$,
    $$SELECT * FROM dwh.product_summary_from_facts$$,
    'after these windows the whole product summary equals its recomputation from the facts'
);
SELECT set_eq(
    $$SELECT account_key, deals, open_deals, won_deals, lost_deals, won_value, won_days, won_timed_deals,
             first_engage_key, first_engage_deals, last_close_key, last_close_deals
        FROM dwh.fact_sales_account_summary$$,
    $$SELECT * FROM dwh.account_summary_from_facts$$,
    'after these windows the whole account summary (extremes included) equals its recomputation from the facts'
);
SELECT set_eq(
    $$SELECT deal_stage_key, engage_date_key, open_deals, list_value FROM dwh.fact_sales_open_pipeline$$,
    $$SELECT * FROM dwh.open_pipeline_from_facts$$,
    'after these windows the whole open pipeline summary equals its recomputation from the facts'
);
SELECT tests.end_run();

-- Run 8: the server restarts after the pull committed ------------------------------------------
-- The window and the stage are unlogged: a restart (or a failover) empties
-- them, while the run goes on from its next step (an Airflow task retried alone).
SELECT tests.new_window();
SELECT tests.open_step('incremental_update', 'etl.pull_change_window', 'etl.change_window') AS pull8 \gset
SELECT tests.running_run() AS run8 \gset
-- What the pull left: one change of deal F5, staged, and its record in etl.run.
SELECT tests.capture('sales_pipeline', 'U', 'F5', 3001, '2017-05-02 10:00+00');
SELECT tests.stage_deal('F5', 'Lost', '2017-01-05', '2017-04-10', 0, 2, 2, 2);
UPDATE etl.run SET changes_in_window = 1, source_snapshot = pg_current_snapshot(),
       source_snapshot_at = now()
 WHERE run_id = :run8;
UPDATE etl.loading_metadata SET status = 'succeeded', rows_in = 1 WHERE loading_metadata_id = :pull8;
-- The restart.
SELECT tests.new_window();
-- Every step opens through etl.begin_step, which checks the stage first.
SELECT tests.attempt(format($q$SELECT etl.begin_step(%s, %L, %L)$q$,
                            :run8, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance'))
    AS fct8_error,
       tests.attempt(format($q$SELECT etl.begin_step(%s, %L, %L)$q$,
                            :run8, 'dwh.load_fact_sales_monthly_aggregate', 'dwh.fact_sales_monthly_aggregate'))
    AS agg8_error \gset
SELECT results_eq(
    format('SELECT window_applied FROM etl.run WHERE run_id = %s', :run8),
    $$VALUES (false)$$,
    'a run whose pulled window a restart emptied never marks that window applied (its changes would be skipped for good)'
);

SELECT * FROM finish();
ROLLBACK;
