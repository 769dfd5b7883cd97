-- b2b_etl may only run the pipeline: every owner-rights (SECURITY DEFINER)
-- function of etl and dwh is either beyond its reach (no EXECUTE: internal,
-- called only by the owner's own functions), part of the documented call
-- surface the procedures use (each tested for what it allows), or refuses a
-- call outside the step of the caller's own running run. The functions are
-- enumerated from the catalog, so a routine added later is probed without
-- anyone adding it here.
BEGIN;
SELECT plan(13);

-- A finished incremental run with every step succeeded: old step ids to call
-- units with, as the review did (SELECT etl.stage_change_window(<old step id>)).
-- A succeeded initial load before it: without its guard, a unit would go on working.
INSERT INTO etl.run (pipeline, batch_size, status, finished_at, source_snapshot)
VALUES ('initial_load', 10, 'succeeded', now(), pg_current_snapshot());
INSERT INTO etl.run (pipeline, batch_size, status, finished_at) VALUES ('incremental_update', 10, 'succeeded', now());
SELECT max(run_id) AS old_run FROM etl.run \gset
INSERT INTO etl.loading_metadata (run_id, step, table_name, status, finished_at, executor_pid)
SELECT :old_run, s.step, s.table_name, 'succeeded', now(), pg_backend_pid()
  FROM etl.pipeline_step AS s WHERE s.pipeline = 'incremental_update';

-- tests.refused_by_guard(sqlstate, message): refused by etl.assert_step_executor
-- itself, not by some later check that a change could remove.
CREATE FUNCTION tests.refused_by_guard(p_sqlstate text, p_message text)
RETURNS boolean
LANGUAGE sql
AS $fn$
    SELECT coalesce(p_sqlstate = '55000' AND p_message LIKE '% runs only inside its own step %', false);
$fn$;

-- The step ids of each run's units, read by the probe below as b2b_etl.
CREATE TABLE tests.probe_id (run_id bigint, unit text, id bigint);
CREATE FUNCTION tests.note_probe_ids(p_run_id bigint)
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO tests.probe_id
    SELECT m.run_id, s.unit, m.loading_metadata_id
      FROM etl.loading_metadata AS m
      JOIN etl.run AS r ON r.run_id = m.run_id
      JOIN etl.pipeline_step AS s ON s.pipeline = r.pipeline AND s.step = m.step
     WHERE m.run_id = p_run_id;
$fn$;

-- tests.probe(run): calls, as the current role, every SECURITY DEFINER
-- function of etl and dwh that the role may execute, except the call surface,
-- with the unit's step id of the given run (the first bigint) and NULL for
-- every other argument; returns each with the SQLSTATE it raised (NULL: it ran).
CREATE FUNCTION tests.probe(p_run_id bigint, p_units_only boolean DEFAULT false)
RETURNS TABLE (routine text, raised text, message text)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v record;
    v_args text;
BEGIN
    FOR v IN
        SELECT p.oid, p.oid::regprocedure::text AS signature, p.proargtypes,
               n.nspname || '.' || p.proname AS name
          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('etl', 'dwh') AND p.prosecdef
           AND has_function_privilege(current_user, p.oid, 'EXECUTE')
           AND p.oid::regprocedure::text NOT IN (SELECT c.signature FROM tests.call_surface AS c)
           AND (NOT p_units_only OR n.nspname || '.' || p.proname IN (SELECT i.unit FROM tests.probe_id AS i))
         ORDER BY 2
    LOOP
        SELECT string_agg(CASE WHEN a.n = 1 AND a.t = 'bigint'::regtype
                               THEN coalesce((SELECT i.id FROM tests.probe_id AS i
                                               WHERE i.run_id = p_run_id AND i.unit = v.name),
                                             (SELECT max(i.id) FROM tests.probe_id AS i
                                               WHERE i.run_id = p_run_id))::text
                               ELSE format('NULL::%s', a.t::regtype) END, ', ' ORDER BY a.n)
          INTO v_args
          FROM unnest(v.proargtypes::oid[]) WITH ORDINALITY AS a (t, n);
        routine := v.signature;
        raised := NULL;
        message := NULL;
        BEGIN
            EXECUTE format('SELECT %s(%s)', v.oid::regproc, coalesce(v_args, ''));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS raised = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        END;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- The call surface: what the pipeline's procedures call with the caller's
-- rights besides the units, each allowed for a stated reason (and tested below
-- or in 05_runs_and_steps.sql).
CREATE TABLE tests.call_surface (signature text PRIMARY KEY, why text NOT NULL);
INSERT INTO tests.call_surface VALUES
('etl.open_run(text,integer,boolean,text)', 'starts a run: etl.start_run; two runs never interleave'),
('etl.mark_run_abandoned(bigint)', 'gives up a run between steps: etl.abandon_run'),
('etl.begin_step(bigint,text,text)', 'opens a step of the run''s pipeline in order, holding the lock'),
('etl.release_pipeline_lock()', 'releases only the caller''s own session lock'),
('etl.pipeline_lock_holder()', 'reads pg_locks'),
('etl.pipeline_idle()', 'a plain read of etl.run: the initial load DAG''s sensor'),
('etl.validate(bigint)', 'the contract''s etl.validate(run_id): re-checks a run'),
('dwh.date_key(date)', 'immutable helper'),
('dwh.fact_lineage(text)', 'reads one deal''s lineage');
GRANT USAGE ON SCHEMA tests TO b2b_etl;
GRANT SELECT ON tests.call_surface, tests.probe_id TO b2b_etl;
GRANT EXECUTE ON FUNCTION tests.probe(bigint, boolean), tests.refused_by_guard(text, text) TO b2b_etl;

SELECT is(
    (SELECT array_agg(c.signature ORDER BY 1) FROM tests.call_surface AS c
      WHERE to_regprocedure(c.signature) IS NULL),
    NULL, 'every routine of the call surface exists'
);
SELECT tests.note_probe_ids(:old_run);
SET ROLE b2b_etl;
CREATE TEMPORARY TABLE probed AS SELECT * FROM tests.probe(:old_run);
RESET ROLE;
SELECT cmp_ok(
    (SELECT count(*)::integer FROM probed), '>=',
    (SELECT count(DISTINCT unit)::integer + 1 FROM etl.pipeline_step),
    'the probe reaches every unit of etl.pipeline_step and etl.close_step'
);
SELECT is(
    (SELECT array_agg(p.routine || ' raised ' || coalesce(p.raised, 'nothing') ORDER BY 1)
       FROM probed AS p
      WHERE p.raised IS DISTINCT FROM '42501' AND NOT tests.refused_by_guard(p.raised, p.message)),
    NULL,
    'b2b_etl: every owner-rights function it may execute, but the call surface, is internal or its guard refuses an old step''s id'
);

-- A step that is running, but executed by another backend (pid 0 never is one).
INSERT INTO etl.run (pipeline, batch_size) VALUES ('incremental_update', 10);
SELECT tests.running_run() AS live_run \gset
INSERT INTO etl.loading_metadata (run_id, step, table_name, status, finished_at, executor_pid)
SELECT :live_run, s.step, s.table_name, 'succeeded', now(), 0
  FROM etl.pipeline_step AS s WHERE s.pipeline = 'incremental_update';
UPDATE etl.loading_metadata SET status = 'running', finished_at = NULL WHERE run_id = :live_run;
SELECT tests.note_probe_ids(:live_run);
SET ROLE b2b_etl;
CREATE TEMPORARY TABLE probed_live AS SELECT * FROM tests.probe(:live_run);
RESET ROLE;
SELECT is(
    (SELECT array_agg(p.routine || ' raised ' || coalesce(p.raised, 'nothing') ORDER BY 1)
       FROM probed_live AS p WHERE NOT tests.refused_by_guard(p.raised, p.message)),
    NULL,
    'b2b_etl: the guard of every such function refuses (55000) a running step another backend executes'
);
-- Even the owner's session (the superuser here) gets the same answer: the guard is
-- about the step, not the role.
CREATE TEMPORARY TABLE probed_owner AS SELECT * FROM tests.probe(:old_run, p_units_only => true);
SELECT is(
    (SELECT array_agg(p.routine || ' raised ' || coalesce(p.raised, 'nothing') ORDER BY 1)
       FROM probed_owner AS p WHERE NOT tests.refused_by_guard(p.raised, p.message)),
    NULL, 'a unit refuses an old step''s id whoever calls it (55000)'
);

-- The holes the review found, one by one, as b2b_etl.
SELECT loading_metadata_id AS old_pull FROM etl.loading_metadata
 WHERE run_id = :old_run AND step = 'etl.pull_change_window' \gset
SET ROLE b2b_etl;
SELECT throws_ok(
    format('SELECT etl.stage_change_window(%s)', :old_pull), '55000', NULL,
    'b2b_etl cannot pull a window (advance the applied snapshot) with an old step''s id'
);
SELECT throws_ok(
    $$SELECT dwh.clear_star_schema()$$, '42501', NULL,
    'b2b_etl cannot empty the star schema: dwh.clear_star_schema is internal'
);
SELECT throws_ok(
    $$SELECT etl.suspend_ddl('etl.run')$$, '42501', NULL,
    'b2b_etl cannot drop indexes: etl.suspend_ddl is internal'
);
SELECT throws_ok(
    $$SELECT etl.take_pipeline_lock()$$, '42501', NULL,
    'b2b_etl cannot take the pipeline lock outside a step: etl.take_pipeline_lock is internal'
);
SELECT throws_ok(
    format($$SELECT etl.close_step(%s, NULL, NULL, NULL, NULL, NULL)$$, :old_pull), '55000', NULL,
    'b2b_etl cannot close a step it does not execute'
);
RESET ROLE;

-- Steps out of band: a step of the other pipeline, and a step whose earlier
-- steps have not succeeded since the ones before them ran again.
UPDATE etl.loading_metadata SET status = 'succeeded', finished_at = clock_timestamp() WHERE run_id = :live_run;
SET ROLE b2b_etl;
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'etl.extract_source', 'etl.stage_*')$$, '55000',
    format('etl.extract_source (table etl.stage_*) is not a step of the incremental_update pipeline (run %s)',
           :live_run),
    'an initial load''s step (which empties the star schema) cannot run inside an incremental run'
);
RESET ROLE;
-- The pull ran again after the dimensions: the facts and the aggregate (which marks
-- the window applied) must wait until the dimensions have run again.
UPDATE etl.loading_metadata SET finished_at = clock_timestamp() + interval '1 minute'
 WHERE run_id = :live_run AND step = 'etl.pull_change_window';
SET ROLE b2b_etl;
SELECT throws_ok(
    $$SELECT etl.begin_step(NULL, 'dwh.load_fact_sales_monthly_aggregate', 'dwh.fact_sales_monthly_aggregate')$$,
    '55000', format('step dwh.load_fact_sales_monthly_aggregate of run %s cannot run before dwh.load_dim_date '
                    'has succeeded (after the steps before it)', :live_run),
    'the aggregate step (which marks the window applied) waits for the steps after a re-pulled window'
);
SELECT ok(
    (SELECT etl.pipeline_lock_holder()) IS NULL,
    'a refused step leaves the pipeline lock free'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
