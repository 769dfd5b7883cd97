-- Runs and steps: the pipeline lock, opening and resuming steps, one
-- running run at a time, settings, counts, the extract unit, closing a run,
-- and the committing procedures' refusal to run inside a transaction block.
BEGIN;
SELECT plan(53);

-- Schema contract --------------------------------------------------------------
SELECT has_table('etl', 'run', 'etl.run exists');
SELECT has_table('etl', 'loading_metadata', 'etl.loading_metadata exists');
SELECT function_returns('etl', 'begin_step', ARRAY['bigint', 'text', 'text'], 'etl.loading_metadata',
                        'etl.begin_step opens a step and returns its metadata row');
SELECT is_procedure('etl', 'start_run', ARRAY['text', 'integer', 'bigint', 'boolean', 'text'], 'etl.start_run is a procedure');
SELECT col_default_is('etl', 'run', 'status', 'running', 'a new run is running');

-- The pipeline lock ---------------------------------------------------------------
SELECT is(etl.pipeline_lock_holder(), NULL, 'pipeline_lock_holder() is NULL while no step executes');

-- Another session (dblink, when available) holds the lock: steps and runs are refused.
SELECT count(*) > 0 AS has_dblink FROM pg_available_extensions WHERE name = 'dblink' \gset
\if :has_dblink
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT tests.second_session('other') AS other \gset
\else
SELECT false AS other \gset
\endif
INSERT INTO etl.run (pipeline, batch_size) VALUES ('initial_load', 10);
SELECT tests.running_run() AS run0 \gset
\if :other
SELECT * FROM dblink('other', 'SELECT pg_backend_pid(), pg_try_advisory_lock(1647469175, 1)')
    AS t (pid integer, locked boolean) \gset other_
SELECT is(etl.pipeline_lock_holder(), :other_pid, 'pipeline_lock_holder() names the backend that holds the lock');
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'etl.extract_source', 'etl.stage_*')$$,
    '55P03', format('another pipeline step is executing (backend pid %s)', :other_pid),
    'a step cannot begin while another session holds the pipeline lock (55P03)'
);
SELECT throws_ok(
    $$CALL etl.start_run('initial_load')$$,
    '55P03', format('cannot start a initial_load run: a step of run %s is executing (backend pid %s)', :run0, :other_pid),
    'a run cannot start while a step of another run executes (55P03)'
);
SELECT is(
    (SELECT status FROM etl.run WHERE run_id = :run0), 'running',
    'a refused start leaves the running run alone'
);
SELECT * FROM dblink('other', 'SELECT pg_advisory_unlock(1647469175, 1)') AS t (unlocked boolean);
SELECT dblink_disconnect('other');
\else
-- No second session is a failure, not a skip: these tests must run.
SELECT fail('a second session through dblink is needed to test lock contention') FROM generate_series(1, 4);
\endif
-- The same advisory lock held in another database of the cluster (another
-- warehouse, a test copy) is not this warehouse's pipeline lock.
\if :other
SELECT tests.second_session('elsewhere', 'postgres') AS elsewhere \gset
\else
SELECT false AS elsewhere \gset
\endif
\if :elsewhere
SELECT * FROM dblink('elsewhere', 'SELECT pg_backend_pid(), pg_try_advisory_lock(1647469175, 1)')
    AS t (pid integer, locked boolean) \gset elsewhere_
SELECT ok(
    NOT EXISTS (SELECT FROM pg_stat_activity AS a
                 WHERE a.pid = etl.pipeline_lock_holder() AND a.datname IS DISTINCT FROM current_database()),
    'pipeline_lock_holder() never names a backend of another database (its advisory lock is not this warehouse''s)'
);
SELECT lives_ok(
    $$SELECT etl.begin_step(NULL, 'etl.extract_source', 'etl.stage_*')$$,
    'a step begins while another database''s pipeline holds its own lock'
);
SELECT pg_advisory_unlock_all();
SELECT * FROM dblink('elsewhere', 'SELECT pg_advisory_unlock(1647469175, 1)') AS t (unlocked boolean);
SELECT dblink_disconnect('elsewhere');
\else
SELECT fail('a second session through dblink is needed to test the cross-database lock') FROM generate_series(1, 2);
\endif
DELETE FROM etl.loading_metadata WHERE run_id = :run0;
DELETE FROM etl.run WHERE run_id = :run0;

-- etl.begin_step: which run it works for ---------------------------------------------
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'dwh.load_dim_date', 'dwh.dim_date')$$,
    '55000', 'no etl run to work for (none is running)',
    'a step with no running (or failed) run to work for is refused (55000)'
);
SELECT throws_ok(
    $$SELECT etl.begin_step(424242, 'dwh.load_dim_date', 'dwh.dim_date')$$,
    '55000', 'no etl run to work for (run 424242 does not exist)',
    'a step for a run that does not exist is refused (55000)'
);
INSERT INTO etl.run (pipeline, batch_size, status, finished_at) VALUES ('initial_load', 10, 'succeeded', now());
SELECT max(run_id) AS run_done FROM etl.run \gset
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'dwh.load_dim_date', 'dwh.dim_date')$$,
    '55000', NULL,
    'a step is refused when the latest run succeeded: there is nothing to resume'
);
SELECT throws_ok(
    format($$SELECT etl.begin_step(%s, 'dwh.load_dim_date', 'dwh.dim_date')$$, :run_done),
    '55000', format('no etl run to work for (run %s succeeded)', :run_done),
    'a step for a run that already succeeded is refused'
);
SELECT ok(NOT tests.holds_pipeline_lock(), 'a refused step does not take the pipeline lock');

-- One running run at a time.
INSERT INTO etl.run (pipeline, batch_size) VALUES ('initial_load', 10);
SELECT tests.running_run() AS run1 \gset
SELECT throws_ok(
    $$INSERT INTO etl.run (pipeline, batch_size) VALUES ('incremental_update', 10)$$,
    '23505', NULL,
    'a second running run is refused by the unique index (23505)'
);
SELECT throws_ok(
    $$INSERT INTO etl.run (pipeline, batch_size, status) VALUES ('nightly', 10, 'failed')$$,
    '23514', NULL,
    'a run belongs to one of the two pipelines'
);

-- A failed run is resumed by the next step.
UPDATE etl.run SET status = 'failed', finished_at = now(), message = 'dwh.load_dim_date failed: boom'
 WHERE run_id = :run1;
SELECT tests.steps_succeeded(:run1, 'dwh.load_fact_sales_performance');
INSERT INTO etl.loading_metadata (run_id, step, table_name, status, rows_in, resume_after, message)
VALUES (:run1, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance', 'failed', 5, '7', 'boom');
SELECT loading_metadata_id AS step1 FROM etl.loading_metadata
 WHERE run_id = :run1 AND step = 'dwh.load_fact_sales_performance' \gset
SELECT results_eq(
    $$SELECT loading_metadata_id, run_id, status, rows_in, resume_after, message
        FROM etl.begin_step(NULL, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance')$$,
    format($q$VALUES (%s::bigint, %s::bigint, 'running'::text, 5::bigint, '7'::text, NULL::text)$q$, :step1, :run1),
    'a retried step reopens its metadata row: running again, its counts and resume point kept, its message cleared'
);
SELECT results_eq(
    format('SELECT status, finished_at, message FROM etl.run WHERE run_id = %s', :run1),
    $$VALUES ('running'::text, NULL::timestamptz, 'resumed by dwh.load_fact_sales_performance'::text)$$,
    'a step begun with no run given resumes the latest failed run (back to running)'
);
SELECT ok(tests.holds_pipeline_lock(), 'a step that began holds the pipeline lock for its session');
SELECT is(
    (SELECT run_id FROM etl.begin_step(NULL, 'dwh.load_dim_date', 'dwh.dim_date')), :run1::bigint,
    'while a run is running, a step begun with no run given works for it'
);
SELECT is(
    (SELECT count(*)::integer FROM etl.loading_metadata WHERE run_id = :run1 AND step = 'dwh.load_dim_date'), 1,
    'a step of the run keeps one metadata row, reopened when it runs again'
);
SELECT results_eq(
    format($q$SELECT m.status, e.sqlstate, e.procedure_name FROM etl.loading_metadata AS m
                JOIN etl.error_log AS e ON e.run_id = m.run_id AND e.procedure_name = m.step
               WHERE m.run_id = %s$q$, :run1),
    $$VALUES ('failed'::text, 'B2B02'::text, 'dwh.load_fact_sales_performance'::text)$$,
    'a step found running when the lock is taken for another was interrupted: failed, logged B2B02'
);
SELECT pg_advisory_unlock_all();
SELECT ok(NOT tests.holds_pipeline_lock(), 'the session no longer holds the lock once released');

-- An older failed run is not resumed once a later one succeeded.
UPDATE etl.run SET status = 'failed' WHERE run_id = :run1;
INSERT INTO etl.run (pipeline, batch_size, status) VALUES ('incremental_update', 10, 'succeeded');
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'dwh.load_dim_date', 'dwh.dim_date')$$,
    '55000', NULL,
    'an older failed run is not resumed once a later run succeeded'
);
SELECT throws_ok(
    format($$SELECT etl.begin_step(%s, 'etl.extract_source', 'etl.stage_*')$$, :run1),
    '55000', NULL,
    'nor when a retried task names it: a failed run superseded by a later run stays failed (55000)'
);
SELECT pg_advisory_unlock_all();
DELETE FROM etl.error_log;
DELETE FROM etl.loading_metadata;
DELETE FROM etl.run;

-- Settings ----------------------------------------------------------------------------
SELECT is(etl.config_value('batch_size'), '200000', 'etl.config_value reads a setting');
SELECT throws_ok(
    $$SELECT etl.config_value('no_such_setting')$$,
    '22023', 'etl.config has no setting ''no_such_setting''',
    'an unknown setting is an error (22023) naming it'
);

-- etl.add_step_counts ------------------------------------------------------------------------
SELECT tests.open_step('initial_load', 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance') AS cnt \gset
SELECT etl.add_step_counts(:cnt, 10, 8, 1, 0, 2, '3');
SELECT etl.add_step_counts(:cnt, p_in => 5, p_inserted => 5);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated, rows_deleted, rows_rejected, batches, resume_after
        FROM etl.loading_metadata WHERE loading_metadata_id = $$ || :cnt,
    $$VALUES (15::bigint, 13::bigint, 1::bigint, 0::bigint, 2::bigint, 2, '3'::text)$$,
    'add_step_counts adds each unit''s counts, counts its batches, and keeps the resume point when given none'
);

-- etl.stage_source: the extract unit, on the (empty) source --------------------------------
SELECT tests.stage_small_source();
SELECT tests.stage_deal('OLD1');
SELECT tests.run_unit('initial_load', 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account');
SELECT tests.open_step('initial_load', 'etl.extract_source', 'etl.stage_*') AS ext \gset
SELECT tests.running_run() AS run2 \gset
SELECT is(etl.stage_source(:ext), NULL, 'the extract unit is done in one call (returns NULL)');
SELECT is(
    (SELECT count(*)::integer FROM etl.stage_accounts) + (SELECT count(*)::integer FROM etl.stage_products)
  + (SELECT count(*)::integer FROM etl.stage_sales_agents) + (SELECT count(*)::integer FROM etl.stage_sales_pipeline),
    0,
    'the stage is replaced by the source''s contents (empty here), nothing left from before'
);
SELECT ok(
    (SELECT source_snapshot IS NOT NULL AND source_snapshot_at IS NOT NULL FROM etl.run WHERE run_id = :run2),
    'the extract records the source snapshot it read, and its time, on the run'
);
SELECT is(
    (SELECT array_agg(account_key) FROM dwh.dim_account), ARRAY[-1],
    'the extract of an initial load clears the star schema down to the Unknown members'
);
SELECT is(
    (SELECT count(*)::integer FROM dwh.dim_deal_stage), 5,
    'clearing the star schema keeps the deal stages'
);
SELECT results_eq(
    $$SELECT rows_in, rows_inserted, rows_updated, resume_after, message FROM etl.loading_metadata
       WHERE run_id = $$ || :run2 || $$ AND step = 'dwh.load_dim_account'$$,
    $$VALUES (0::bigint, 0::bigint, 0::bigint, NULL::text, 'reset: the source was extracted again'::text)$$,
    'the run''s later steps are reset: they start over from this extract'
);
SELECT results_eq(
    $$SELECT rows_in, resume_after FROM etl.loading_metadata WHERE run_id = $$ || :run2
      || $$ AND step = 'dwh.load_fact_sales_performance'$$,
    $$VALUES (0::bigint, NULL::text)$$,
    'a batched step''s resume point is reset by a new extract'
);
INSERT INTO dwh.dim_account (account_id, account_name) VALUES (77, 'First after clear') ;
SELECT is(
    (SELECT account_key FROM dwh.dim_account WHERE account_id = 77), 1,
    'surrogate keys restart at 1 after the clear, so a rebuild gives the same keys'
);

-- etl.close_run: the last unit of a run ------------------------------------------------------
SELECT tests.end_run();
SELECT tests.open_step('initial_load', 'dwh.load_dim_date', 'dwh.dim_date') AS dat \gset
SELECT tests.open_step('initial_load', 'etl.finish_run', 'etl.run') AS fin \gset
SELECT tests.running_run() AS run3 \gset
SELECT throws_ok(
    format('SELECT etl.close_run(%s)', :fin), '55000',
    format('run %s cannot finish: steps not succeeded: dwh.load_dim_date (running)', :run3),
    'a run cannot finish while one of its steps has not succeeded (55000), naming it'
);
UPDATE etl.loading_metadata SET status = 'succeeded' WHERE loading_metadata_id = :dat;
SELECT throws_ok(
    format('SELECT etl.close_run(%s)', :fin), '55000',
    format('run %s cannot finish: it was not validated', :run3),
    'a run cannot finish before it was validated (55000)'
);
INSERT INTO etl.validation_result (run_id, check_name, passed) VALUES (:run3, 'a check', true);
SELECT is(etl.close_run(:fin), NULL, 'a validated run whose steps all succeeded finishes');
SELECT ok(
    (SELECT status = 'succeeded' AND finished_at IS NOT NULL AND message IS NULL FROM etl.run WHERE run_id = :run3),
    'a finished run is marked succeeded, with its end time'
);

-- Committing procedures refuse to run inside a transaction block ---------------------------
SELECT tests.drop_pipeline_lock();
SELECT throws_ok(
    $$CALL etl.start_run('nightly')$$, '22023', NULL,
    'etl.start_run refuses an unknown pipeline (22023) before anything else'
);
SELECT throws_ok(
    $$CALL etl.start_run('initial_load', 0)$$, '22023', 'batch size must be positive, got 0',
    'etl.start_run refuses a batch size below 1 (22023)'
);
SELECT throws_ok(
    $$CALL etl.start_run('initial_load')$$, '2D000', NULL,
    'etl.start_run commits: inside a transaction block it fails (2D000), so call it with CALL alone'
);
SELECT ok(NOT tests.holds_pipeline_lock(), 'a start_run that could not commit leaves the pipeline lock free');
SELECT throws_ok(
    $$CALL etl.run_initial_load()$$, '2D000', NULL,
    'the initial load commits per step: inside a transaction block it fails (2D000)'
);
SELECT tests.open_step('initial_load', 'dwh.load_dim_date', 'dwh.dim_date') AS dat4 \gset
SELECT throws_ok(
    format('CALL etl.end_step(%s)', :dat4), '2D000', NULL,
    'etl.end_step commits: inside a transaction block it fails (2D000)'
);
SELECT throws_ok(
    format($$CALL etl.end_step(%s, 'XX000', 'boom')$$, :dat4), '2D000', NULL,
    'etl.end_step of a failure rolls back and commits: inside a transaction block it fails (2D000)'
);
SELECT tests.drop_pipeline_lock();
SELECT throws_ok(
    $$CALL dwh.load_dim_date()$$, '2D000', NULL,
    'a step procedure commits: inside a transaction block it fails (2D000)'
);
SELECT ok(
    NOT tests.holds_pipeline_lock(),
    'a step CALLed inside a transaction block does not leave its session holding the pipeline lock'
);

-- Giving up a run that does not exist says so (etl.abandon_run's work, without its COMMIT).
SELECT throws_ok(
    'SELECT etl.mark_run_abandoned(987654321)', '22023', 'run 987654321 does not exist',
    'abandoning a run that does not exist names it as missing, not as "not running"'
);

SELECT * FROM finish();
ROLLBACK;
