-- Starting a run while another is going, as the DAGs do (issue 12, part 1):
-- etl.open_run's p_when_busy ('refuse', 'skip', 'wait': what etl.start_run
-- commits) and etl.pipeline_idle, the initial load DAG's sensor. The
-- committing procedure itself, its wait loop and the DAGs through a real
-- Airflow are tests/test_run_start_when_busy.py and tests/test_airflow_cli.py.
BEGIN;
SELECT plan(20);

-- Schema contract --------------------------------------------------------------
SELECT function_returns('etl', 'open_run', ARRAY['text', 'integer', 'boolean', 'text'], 'bigint',
                        'etl.open_run(pipeline, batch size, in one call, when busy) returns the run id');
SELECT function_returns('etl', 'pipeline_idle', ARRAY[]::text[], 'boolean',
                        'etl.pipeline_idle() says whether a run could start now');
SELECT ok(has_function_privilege('b2b_etl', 'etl.pipeline_idle()', 'EXECUTE'),
          'b2b_etl (the DAGs'' connection) may call etl.pipeline_idle');
SELECT ok(NOT has_function_privilege('b2b_etl', 'etl.run_interruption(bigint)', 'EXECUTE'),
          'etl.run_interruption is internal: b2b_etl may not call it');
SELECT is((SELECT p.provolatile FROM pg_proc AS p WHERE p.oid = 'etl.pipeline_idle()'::regprocedure), 's',
          'etl.pipeline_idle is STABLE: a plain read');
SELECT throws_ok(
    $$SELECT etl.open_run('incremental_update', 10, false, 'later')$$, '22023', NULL,
    'an unknown p_when_busy is refused (22023)'
);

-- A fresh warehouse -----------------------------------------------------------------------
SELECT ok(etl.pipeline_idle(), 'no run at all: the pipeline is idle');
SELECT is(etl.open_run('incremental_update', 10, false, 'skip'), NULL,
          'skip: no incremental run before any initial load');
SELECT is((SELECT count(*)::integer FROM etl.run), 0, 'and nothing is written');

-- An initial load between steps (started just now) ------------------------------------------
INSERT INTO etl.run (pipeline, batch_size) VALUES ('initial_load', 10);
SELECT tests.running_run() AS load1 \gset
SELECT ok(NOT etl.pipeline_idle(), 'a run between steps: the pipeline is not idle');
SELECT is(etl.open_run('incremental_update', 10, false, 'skip'), NULL,
          'skip: no incremental run while the initial load is between steps');
SELECT is(etl.open_run('initial_load', 10, false, 'wait'), NULL,
          'wait: NULL while a run is between steps (etl.start_run tries again)');
SELECT throws_ok(
    $$SELECT etl.open_run('initial_load', 10, false, 'refuse')$$, '55P03', NULL,
    'refuse (the default): 55P03 as before'
);
SELECT results_eq(
    $$SELECT run_id, status FROM etl.run$$, format($$VALUES (%s::bigint, 'running'::text)$$, :load1),
    'skipping and waiting leave the running run alone and start none'
);

-- A step left running with nobody holding the lock: its executor died -----------------------
INSERT INTO etl.loading_metadata (run_id, step, table_name, status)
VALUES (:load1, 'etl.extract_source', 'etl.stage_*', 'running');
SELECT ok(etl.pipeline_idle(), 'a run whose step was left running by a dead executor: idle (it would be superseded)');
SET ROLE b2b_etl;
SELECT ok(etl.pipeline_idle(), 'and so it says to b2b_etl, which cannot read etl.run itself');
RESET ROLE;
DELETE FROM etl.loading_metadata WHERE run_id = :load1;

-- Idle beyond run_idle_timeout: superseded by whoever starts --------------------------------
UPDATE etl.run SET started_at = clock_timestamp() - interval '2 hours' WHERE run_id = :load1;
SELECT ok(etl.pipeline_idle(), 'a run idle beyond run_idle_timeout: the pipeline counts as idle');
SELECT isnt(etl.open_run('initial_load', 10, false, 'wait'), NULL,
            'wait: a new run starts, superseding the idle one');
SELECT is((SELECT status FROM etl.run WHERE run_id = :load1), 'failed', 'the idle run is marked failed');
SELECT pg_advisory_unlock_all();

-- After a failed initial load: the incremental run starts, and fails visibly at its pull -----
UPDATE etl.run SET status = 'failed', finished_at = clock_timestamp() WHERE status = 'running';
SELECT isnt(etl.open_run('incremental_update', 10, false, 'skip'), NULL,
            'skip starts an incremental run once an initial load exists, even a failed one (its pull refuses, 55000)');

SELECT * FROM finish();
ROLLBACK;
