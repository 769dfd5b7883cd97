-- Change capture on the source: the statement-level triggers that log every
-- INSERT, UPDATE, DELETE and TRUNCATE of the four tables in cdc.change_log
-- (the key of each row; products also the new image of I and U), the
-- writing transaction and the clock time of each change, who may write the
-- log (only the triggers), and the purge that a reader's reported position
-- sets off. The transactions whose order matters (a TRUNCATE, then a later
-- INSERT) are committed by a second session (dblink) in this throwaway source.
BEGIN;
SELECT plan(48);

-- A second session on this database, when dblink is available.
SELECT count(*) > 0 AS has_dblink FROM pg_available_extensions WHERE name = 'dblink' \gset
\if :has_dblink
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE FUNCTION pg_temp.second_session(p_name text)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM dblink_connect(p_name, format(
        'host=%s port=%s dbname=%s user=%s',
        trim(split_part(current_setting('unix_socket_directories'), ',', 1)),
        current_setting('port'), current_database(), current_user));
    -- Never wait for this file's own locks: fail instead.
    PERFORM dblink_exec(p_name, 'SET lock_timeout = ''10s''');
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'no second session: %', SQLERRM;
    RETURN false;
END
$fn$;
SELECT pg_temp.second_session('crm') AS crm \gset
\else
SELECT false AS crm \gset
\endif

-- TRUNCATE, committed by another transaction (before this file touches the
-- tables: TRUNCATE would wait for its locks) ----------------------------------------------
\if :crm
SELECT dblink_exec('crm', 'BEGIN');
SELECT x AS replacing_txid FROM dblink('crm', 'SELECT pg_current_xact_id()::text') AS t (x text) \gset
SELECT dblink_exec('crm', 'TRUNCATE public.sales_pipeline, public.sales_pipeline_archive, public.products');
SELECT dblink_exec('crm', $$INSERT INTO public.products (product_id, product_name, series, sales_price)
                            VALUES (901, 'Reloaded', 'R', 1)$$);
SELECT dblink_exec('crm', 'COMMIT');
SELECT dblink_exec('crm', $$INSERT INTO public.products (product_id, product_name, series, sales_price)
                            VALUES (902, 'Later', 'R', 2)$$);
SELECT dblink_disconnect('crm');

SELECT results_eq(
    format($q$SELECT table_name, operation::text, row_key FROM cdc.change_log
               WHERE txid = %L::xid8 ORDER BY table_name$q$, :'replacing_txid'),
    $$VALUES ('products'::text, 'T'::text, NULL::text), ('sales_pipeline', 'T', NULL),
             ('sales_pipeline_archive', 'T', NULL)$$,
    'a TRUNCATE logs one T change per emptied table, without a key, and the INSERT after it in the same transaction is not logged'
);
SELECT ok(
    EXISTS (SELECT FROM cdc.source_replaced WHERE txid = :'replacing_txid'::xid8),
    'the truncating transaction is remembered in cdc.source_replaced'
);
SELECT results_eq(
    format($q$SELECT operation::text, row_data ->> 'product_name', txid <> %L::xid8
               FROM cdc.change_log WHERE table_name = 'products' AND row_key = '902'$q$, :'replacing_txid'),
    $$VALUES ('I'::text, 'Later'::text, true)$$,
    'an INSERT in a later transaction is logged again'
);
SELECT is_empty(
    $$SELECT FROM cdc.change_log WHERE row_key = '901'$$,
    'the re-inserted row of the truncating transaction has no change of its own'
);
\else
-- No second session is a failure, not a skip: these tests must run.
SELECT fail('a second session through dblink is needed to commit a TRUNCATE and a later INSERT')
  FROM generate_series(1, 4);
\endif

-- Schema contract ---------------------------------------------------------------
SELECT has_schema('cdc', 'the source has a cdc schema for change capture');
SELECT columns_are('cdc', 'change_log', ARRAY[
    'change_id', 'txid', 'table_name', 'operation', 'row_key', 'row_data', 'changed_at'
], 'cdc.change_log has the change id, the writing transaction, table, operation, key, image and time');
SELECT col_is_pk('cdc', 'change_log', 'change_id', 'changes are keyed by change_id');
SELECT col_type_is('cdc', 'change_log', 'change_id', 'bigint', 'change ids are bigint');
SELECT col_type_is('cdc', 'change_log', 'txid', 'xid8', 'the writing transaction is an xid8 (pg_current_xact_id: no wraparound)');
SELECT col_type_is('cdc', 'change_log', 'changed_at', 'timestamp with time zone', 'changed_at is a timestamptz');
SELECT col_not_null('cdc', 'change_log', 'txid', 'every change has its writing transaction');
SELECT col_not_null('cdc', 'change_log', 'changed_at', 'every change has its time');
SELECT has_index('cdc', 'change_log', 'change_log_txid_idx', 'txid',
                 'the log is indexed by transaction id (windows are read by txid)');
SELECT has_table('cdc', 'source_replaced', 'cdc.source_replaced remembers transactions that emptied a source table');
SELECT col_is_pk('cdc', 'consumer', 'consumer_name', 'cdc.consumer holds one position per reader');

-- The triggers: statement level, with transition tables ---------------------------------
SELECT set_eq(
    $$SELECT c.relname::text, t.tgname::text, t.tgtype::integer,
             substring(pg_get_triggerdef(t.oid) FROM 'EXECUTE FUNCTION (.*)$'),
             t.tgoldtable::text, t.tgnewtable::text, t.tgenabled::text
        FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal$$,
    $$VALUES
      ('accounts'::text, 'capture_insert'::text, 4, 'cdc.capture_accounts()'::text, NULL::text, 'new_rows'::text, 'O'::text),
      ('accounts', 'capture_update', 16, 'cdc.capture_accounts()', 'old_rows', 'new_rows', 'O'),
      ('accounts', 'capture_delete', 8, 'cdc.capture_accounts()', 'old_rows', NULL, 'O'),
      ('accounts', 'capture_truncate', 32, 'cdc.capture_truncate()', NULL, NULL, 'O'),
      ('products', 'capture_insert', 4, 'cdc.capture_products()', NULL, 'new_rows', 'O'),
      ('products', 'capture_update', 16, 'cdc.capture_products()', 'old_rows', 'new_rows', 'O'),
      ('products', 'capture_delete', 8, 'cdc.capture_products()', 'old_rows', NULL, 'O'),
      ('products', 'capture_truncate', 32, 'cdc.capture_truncate()', NULL, NULL, 'O'),
      ('sales_agents', 'capture_insert', 4, 'cdc.capture_sales_agents()', NULL, 'new_rows', 'O'),
      ('sales_agents', 'capture_update', 16, 'cdc.capture_sales_agents()', 'old_rows', 'new_rows', 'O'),
      ('sales_agents', 'capture_delete', 8, 'cdc.capture_sales_agents()', 'old_rows', NULL, 'O'),
      ('sales_agents', 'capture_truncate', 32, 'cdc.capture_truncate()', NULL, NULL, 'O'),
      ('sales_pipeline', 'capture_insert', 4, 'cdc.capture_sales_pipeline()', NULL, 'new_rows', 'O'),
      ('sales_pipeline', 'capture_update', 16, 'cdc.capture_sales_pipeline()', 'old_rows', 'new_rows', 'O'),
      ('sales_pipeline', 'capture_delete', 8, 'cdc.capture_sales_pipeline()', 'old_rows', NULL, 'O'),
      ('sales_pipeline', 'capture_truncate', 32, 'cdc.capture_truncate()', NULL, NULL, 'O'),
      ('sales_pipeline_archive', 'capture_insert', 4, 'cdc.capture_sales_pipeline_archive()', NULL, 'new_rows', 'O'),
      ('sales_pipeline_archive', 'capture_update', 16, 'cdc.capture_sales_pipeline_archive()', 'old_rows', 'new_rows', 'O'),
      ('sales_pipeline_archive', 'capture_delete', 8, 'cdc.capture_sales_pipeline_archive()', 'old_rows', NULL, 'O'),
      ('sales_pipeline_archive', 'capture_truncate', 32, 'cdc.capture_truncate()', NULL, NULL, 'O'),
      ('sales_pipeline', 'refuse_archived_key_insert', 4, 'cdc.refuse_archived_key()', NULL, 'new_rows', 'O'),
      ('sales_pipeline', 'refuse_archived_key_update', 16, 'cdc.refuse_archived_key()', NULL, 'new_rows', 'O')$$,
    'each source table and the deals'' archive has exactly its AFTER INSERT, UPDATE, DELETE and TRUNCATE capture triggers, enabled, with transition tables and its key column (products: images for I and U); sales_pipeline also refuses archived keys'
);
SELECT is_empty(
    $$SELECT t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
         AND (t.tgtype & 1 = 1 OR t.tgtype & 2 = 2 OR t.tgtype & 64 = 64)$$,
    'every capture trigger is statement level and AFTER (no ROW, BEFORE or INSTEAD OF bit in tgtype): a bulk statement pays one call'
);
SELECT results_eq(
    $$SELECT p.proname::text COLLATE "default", p.prosecdef,
             EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c ~ '^search_path=.*pg_temp$')
        FROM pg_proc AS p
       WHERE p.pronamespace = 'cdc'::regnamespace
         AND p.proname IN ('capture_accounts', 'capture_products', 'capture_sales_agents',
                           'capture_sales_pipeline', 'capture_truncate', 'purge_consumed')
       ORDER BY p.proname$$,
    $$VALUES ('capture_accounts'::text, true, true), ('capture_products', true, true),
             ('capture_sales_agents', true, true), ('capture_sales_pipeline', true, true),
             ('capture_truncate', true, true), ('purge_consumed', true, true)$$,
    'the capture and purge functions are SECURITY DEFINER with a pinned search_path ending in pg_temp'
);

-- Every operation on each table ------------------------------------------------------------
SELECT coalesce(max(change_id), 0) AS m0 FROM cdc.change_log \gset

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.accounts (account_id, account_name, sector) VALUES (101, 'Acme Corporation', 'technology');
INSERT INTO public.accounts (account_id, account_name, sector) VALUES (102, 'Betasoloin', 'medical');
UPDATE public.accounts SET parent_account_id = 101 WHERE account_id = 102;
DELETE FROM public.accounts WHERE account_id = 102;
SELECT results_eq(
    format($q$SELECT operation::text, row_key, row_data FROM cdc.change_log
               WHERE table_name = 'accounts' AND change_id > %s ORDER BY change_id$q$, :m),
    $$VALUES ('I'::text, '101'::text, NULL::jsonb), ('I', '102', NULL), ('U', '102', NULL), ('D', '102', NULL)$$,
    'accounts: insert, update and delete are logged as I, U, D with the row''s key (no image: the warehouse reads the row)'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name, manager_name) VALUES (301, 'Moses Frase', 'Dustin');
UPDATE public.sales_agents SET regional_office = 'Central' WHERE sales_agent_id = 301;
INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name) VALUES (302, 'Darcel Schlecht');
DELETE FROM public.sales_agents WHERE sales_agent_id = 302;
SELECT results_eq(
    format($q$SELECT operation::text, row_key, row_data FROM cdc.change_log
               WHERE table_name = 'sales_agents' AND change_id > %s ORDER BY change_id$q$, :m),
    $$VALUES ('I'::text, '301'::text, NULL::jsonb), ('U', '301', NULL), ('I', '302', NULL), ('D', '302', NULL)$$,
    'sales_agents: insert, update and delete are logged as I, U, D with the row''s key'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.products (product_id, product_name, series, sales_price) VALUES (201, 'GTX Basic', 'GTX', 550);
UPDATE public.products SET sales_price = 600 WHERE product_id = 201;
INSERT INTO public.products (product_id, product_name, series, sales_price) VALUES (202, 'MG Special', 'MG', 55);
DELETE FROM public.products WHERE product_id = 201;
SELECT results_eq(
    format($q$SELECT operation::text, row_key, row_data FROM cdc.change_log
               WHERE table_name = 'products' AND change_id > %s ORDER BY change_id$q$, :m),
    $$VALUES ('I'::text, '201'::text,
              '{"product_id": 201, "product_name": "GTX Basic", "series": "GTX", "sales_price": 550}'::jsonb),
             ('U', '201', '{"product_id": 201, "product_name": "GTX Basic", "series": "GTX", "sales_price": 600}'),
             ('I', '202', '{"product_id": 202, "product_name": "MG Special", "series": "MG", "sales_price": 55}'),
             ('D', '201', NULL)$$,
    'products: I and U are logged with the key and the new image (each transaction''s version, for SCD2), D with the key'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, account_id, deal_stage, engage_date)
VALUES ('OPP-1', 301, 202, 101, 'Engaging', '2017-01-10');
UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = '2017-02-10', close_value = 1000
 WHERE opportunity_id = 'OPP-1';
INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, deal_stage) VALUES ('OPP-2', 301, 202, 'Prospecting');
DELETE FROM public.sales_pipeline WHERE opportunity_id = 'OPP-2';
SELECT results_eq(
    format($q$SELECT operation::text, row_key, row_data ->> 'deal_stage', (row_data ->> 'close_value')::numeric
                FROM cdc.change_log
               WHERE table_name = 'sales_pipeline' AND change_id > %s ORDER BY change_id$q$, :m),
    $$VALUES ('I'::text, 'OPP-1'::text, 'Engaging'::text, NULL::numeric), ('U', 'OPP-1', 'Won', 1000),
             ('I', 'OPP-2', 'Prospecting', NULL), ('D', 'OPP-2', NULL, NULL)$$,
    'sales_pipeline: insert, update and delete are logged as I, U, D with the text key, I and U with the new image (the deal history follows each transaction)'
);

-- Statements of many rows, key changes, upserts, MERGE ------------------------------------
SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name)
SELECT 400 + g, 'Agent ' || g FROM generate_series(1, 25) AS g;
UPDATE public.sales_agents SET regional_office = 'West' WHERE sales_agent_id BETWEEN 401 AND 425;
DELETE FROM public.sales_agents WHERE sales_agent_id BETWEEN 411 AND 420;
SELECT results_eq(
    format($q$SELECT operation::text, count(*)::integer, count(DISTINCT row_key)::integer,
                     min(row_key::integer), max(row_key::integer)
                FROM cdc.change_log WHERE change_id > %s GROUP BY operation ORDER BY operation$q$, :m),
    $$VALUES ('D'::text, 10, 10, 411, 420), ('I', 25, 25, 401, 425), ('U', 25, 25, 401, 425)$$,
    'a statement of many rows logs one change per row it touched, each with its own key (25 I, 25 U, 10 D)'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.products (product_id, product_name, series, sales_price) VALUES (210, 'Rekeyed', 'R', 10);
UPDATE public.products SET product_id = 211 WHERE product_id = 210;
UPDATE public.sales_pipeline SET opportunity_id = 'OPP-1B' WHERE opportunity_id = 'OPP-1';
SELECT results_eq(
    format($q$SELECT table_name, operation::text, row_key,
                     row_data ->> CASE table_name WHEN 'products' THEN 'product_id' ELSE 'opportunity_id' END
                FROM cdc.change_log
               WHERE change_id > %s AND NOT (operation = 'I' AND row_key = '210')
               ORDER BY table_name, operation$q$, :m),
    $$VALUES ('products'::text, 'D'::text, '210'::text, NULL::text), ('products', 'I', '211', '211'),
             ('sales_pipeline', 'D', 'OPP-1', NULL), ('sales_pipeline', 'I', 'OPP-1B', 'OPP-1B')$$,
    'an UPDATE that changes a key is logged as D of the old key and I of the new one (with the new image for products and deals), never U'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
INSERT INTO public.products (product_id, product_name, series, sales_price)
VALUES (202, 'MG Special', 'MG', 60), (203, 'GTK 500', 'GTK', 26768)
ON CONFLICT (product_id) DO UPDATE SET sales_price = excluded.sales_price;
SELECT results_eq(
    format($q$SELECT operation::text, row_key, (row_data ->> 'sales_price')::numeric FROM cdc.change_log
               WHERE change_id > %s ORDER BY row_key$q$, :m),
    $$VALUES ('U'::text, '202'::text, 60::numeric), ('I', '203', 26768)$$,
    'an upsert logs I for the row it inserted and U for the row it updated'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
MERGE INTO public.accounts AS a
USING (VALUES (101, 'Acme Corporation', 'retail'), (103, 'Cancity', 'retail')) AS v (id, name, sector)
   ON a.account_id = v.id
 WHEN MATCHED THEN UPDATE SET sector = v.sector
 WHEN NOT MATCHED THEN INSERT (account_id, account_name, sector) VALUES (v.id, v.name, v.sector);
MERGE INTO public.accounts AS a USING (VALUES (103)) AS v (id) ON a.account_id = v.id
 WHEN MATCHED THEN DELETE;
SELECT results_eq(
    format($q$SELECT operation::text, row_key FROM cdc.change_log WHERE change_id > %s
               ORDER BY change_id$q$, :m),
    $$VALUES ('U'::text, '101'::text), ('I', '103'), ('D', '103')$$,
    'MERGE is captured like the UPDATE, INSERT and DELETE it performs'
);

SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
UPDATE public.accounts SET sector = 'none' WHERE account_id = -1;
DELETE FROM public.products WHERE product_id = -1;
SELECT is_empty(
    format('SELECT FROM cdc.change_log WHERE change_id > %s', :m),
    'a statement that touches no row logs nothing'
);

-- The writing transaction and the time --------------------------------------------------
SELECT results_eq(
    format($q$SELECT count(*) > 40, bool_and(txid = pg_current_xact_id())
                FROM cdc.change_log WHERE change_id > %s$q$, :m0),
    $$VALUES (true, true)$$,
    'every change this transaction made carries its id: txid = pg_current_xact_id()'
);
SELECT ok(
    (SELECT bool_and(changed_at >= now() AND changed_at <= clock_timestamp())
       FROM cdc.change_log WHERE change_id > :m0),
    'changed_at is set to clock time inside the writing transaction (after it began, not later than now)'
);
SELECT is_empty(
    format($q$SELECT FROM (SELECT changed_at < lag(changed_at) OVER (ORDER BY change_id) AS back
                             FROM cdc.change_log WHERE change_id > %s) AS x WHERE back$q$, :m0),
    'within a session, changed_at never goes back as change_id grows'
);

-- No direct writes by application roles ---------------------------------------------------
SELECT 'tap_crm_app_' || pg_backend_pid() AS app_role \gset
CREATE ROLE :"app_role" NOLOGIN;
-- Even a role that may look into cdc cannot write to it.
GRANT USAGE ON SCHEMA cdc TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE
   ON public.accounts, public.products, public.sales_agents, public.sales_pipeline TO :"app_role";
SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
SET ROLE :"app_role";
SELECT lives_ok(
    $$INSERT INTO public.accounts (account_id, account_name) VALUES (601, 'App Corp')$$,
    'an application role inserts into a source table'
);
SELECT lives_ok(
    $$UPDATE public.accounts SET sector = 'retail' WHERE account_id = 601$$,
    'an application role updates a source table'
);
SELECT lives_ok(
    $$DELETE FROM public.accounts WHERE account_id = 601$$,
    'an application role deletes from a source table'
);
SELECT lives_ok(
    $$UPDATE public.products SET sales_price = 65 WHERE product_id = 202$$,
    'an application role updates a product'
);
SELECT throws_ok(
    $$INSERT INTO cdc.change_log (table_name, operation, row_key) VALUES ('accounts', 'D', '101')$$,
    '42501', 'permission denied for table change_log',
    'an application role cannot insert into cdc.change_log (42501)'
);
SELECT throws_ok(
    $$UPDATE cdc.change_log SET row_key = '0'$$,
    '42501', 'permission denied for table change_log',
    'an application role cannot update cdc.change_log (42501)'
);
SELECT throws_ok(
    $$DELETE FROM cdc.change_log$$,
    '42501', 'permission denied for table change_log',
    'an application role cannot delete from cdc.change_log (42501)'
);
SELECT throws_ok(
    $$TRUNCATE cdc.change_log$$,
    '42501', 'permission denied for table change_log',
    'an application role cannot truncate cdc.change_log (42501)'
);
SELECT throws_ok(
    $$INSERT INTO cdc.source_replaced (txid) VALUES (pg_current_xact_id())$$,
    '42501', 'permission denied for table source_replaced',
    'an application role cannot mark its transaction as replacing the source (its inserts would go unlogged)'
);
SELECT throws_ok(
    $$INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention)
      VALUES ('rogue', pg_current_xact_id(), '0 seconds')$$,
    '42501', 'permission denied for table consumer',
    'an application role cannot report a reader''s position (it would purge the log)'
);
RESET ROLE;
SELECT results_eq(
    format($q$SELECT table_name, operation::text, row_key, row_data ->> 'sales_price' FROM cdc.change_log
               WHERE change_id > %s ORDER BY change_id$q$, :m),
    $$VALUES ('accounts'::text, 'I'::text, '601'::text, NULL::text), ('accounts', 'U', '601', NULL),
             ('accounts', 'D', '601', NULL), ('products', 'U', '202', '65')$$,
    'the application role''s writes are captured all the same: the triggers write the log for it'
);

-- cdc.purge_consumed: what readers applied, once old enough --------------------------------
-- Changes of long-gone transactions (ids far below this one's), by hand.
INSERT INTO cdc.change_log (txid, table_name, operation, row_key, changed_at) VALUES
('100', 'accounts', 'U', 'purge:applied-old', now() - interval '30 days'),
('100', 'accounts', 'U', 'purge:applied-recent', now() - interval '1 hour'),
('300', 'accounts', 'U', 'purge:half-applied-old', now() - interval '30 days'),
('500', 'accounts', 'U', 'purge:unapplied-old', now() - interval '30 days');
INSERT INTO cdc.source_replaced (txid, replaced_at) VALUES
('150', now() - interval '30 days'),
('350', now() - interval '30 days');
SELECT count(*) AS changes_before FROM cdc.change_log WHERE row_key NOT LIKE 'purge:%' OR row_key IS NULL \gset

-- Two readers report: the slower one has applied up to 200.
INSERT INTO cdc.consumer (consumer_name, applied_xmin, retention) VALUES
('warehouse_a', '400', '7 days'),
('warehouse_b', '200', '7 days');
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'purge:%'$$,
    $$VALUES ('purge:applied-recent'), ('purge:half-applied-old'), ('purge:unapplied-old')$$,
    'a report purges only changes below every reader''s applied_xmin and older than the retention'
);
SELECT set_eq(
    $$SELECT txid::text FROM cdc.source_replaced WHERE txid IN ('150', '350')$$,
    $$VALUES ('350')$$,
    'replaced-source markers below the same horizon and older than the retention are forgotten'
);
UPDATE cdc.consumer SET applied_xmin = '600', reported_at = clock_timestamp() WHERE consumer_name = 'warehouse_b';
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'purge:%'$$,
    $$VALUES ('purge:applied-recent'), ('purge:unapplied-old')$$,
    'when the slowest reader moves on, what every reader applied is purged; a recent or unapplied change stays'
);
UPDATE cdc.consumer SET retention = '10 minutes', reported_at = clock_timestamp();
SELECT set_eq(
    $$SELECT row_key FROM cdc.change_log WHERE row_key LIKE 'purge:%'$$,
    $$VALUES ('purge:unapplied-old')$$,
    'with a shorter retention an applied change an hour old is purged too; one no reader applied never is'
);
SELECT is(
    (SELECT count(*) FROM cdc.change_log WHERE row_key NOT LIKE 'purge:%' OR row_key IS NULL),
    :changes_before::bigint,
    'the purge leaves this transaction''s own (recent, unapplied) changes alone'
);

-- TRUNCATE in this transaction ---------------------------------------------------------
SELECT coalesce(max(change_id), 0) AS m FROM cdc.change_log \gset
TRUNCATE public.sales_pipeline;
INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, deal_stage)
VALUES ('OPP-9', 301, 202, 'Prospecting');
SELECT results_eq(
    format($q$SELECT table_name, operation::text, row_key, txid = pg_current_xact_id()
                FROM cdc.change_log WHERE change_id > %s$q$, :m),
    $$VALUES ('sales_pipeline'::text, 'T'::text, NULL::text, true)$$,
    'a TRUNCATE here logs T with this transaction''s id, and the INSERT after it is not logged'
);
SELECT ok(
    EXISTS (SELECT FROM cdc.source_replaced WHERE txid = pg_current_xact_id()),
    'this truncating transaction is remembered in cdc.source_replaced too'
);

SELECT * FROM finish();
ROLLBACK;
