-- afterMigrate callback: run by `b2bdwh migrate` at the end of every
-- migration of the warehouse, unrecorded. What must hold after any
-- deployment, re-established from the catalog:
--   - b2b_owner owns the schemas dwh, etl, src, everything in them and the
--     foreign server, so SECURITY DEFINER routines run as b2b_owner, never
--     as the superuser who may have deployed them;
--   - nobody else has rights but these: b2b_etl executes the pipeline's
--     procedures and the owner-rights functions they call (its units do the
--     writing, each only inside its own step),
--     b2b_reader reads dwh and runs its read-only helpers.
--   - b2b_etl's sessions here check every 10 s that their client is still
--     there, so a step whose caller was killed (an Airflow worker) stops
--     instead of running on holding the pipeline lock; its retry then finds
--     the pipeline free. (Per database: a database copied from this one,
--     CREATE DATABASE ... TEMPLATE, gets it at its first migrate.)
-- Runs before the roles exist (a database migrated up to V0006 only): then
-- it does nothing.

DO $privileges$
DECLARE
    v record;
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_roles
         WHERE rolname IN ('b2b_owner', 'b2b_etl', 'b2b_reader')) < 3 THEN
        RETURN;
    END IF;

    -- Ownership. Sequences owned by a column follow their table.
    FOR v IN
        SELECT format('ALTER SCHEMA %I OWNER TO b2b_owner', n.nspname) AS ddl
          FROM pg_catalog.pg_namespace AS n
         WHERE n.nspname IN ('dwh', 'etl', 'src')
           AND n.nspowner <> 'b2b_owner'::regrole
        UNION ALL
        SELECT format('ALTER %s %I.%I OWNER TO b2b_owner',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      n.nspname, c.relname)
          FROM pg_catalog.pg_class AS c
          JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('dwh', 'etl', 'src')
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND c.relowner <> 'b2b_owner'::regrole
           -- (a partition and a table with a generated column depend on
           -- something 'a'uto too, and are changed like any table)
           AND NOT (c.relkind = 'S'
                    AND EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype IN ('a', 'i')))
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO b2b_owner', p.oid::regprocedure)
          FROM pg_catalog.pg_proc AS p
          JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('dwh', 'etl', 'src')
           AND p.proowner <> 'b2b_owner'::regrole
        UNION ALL
        SELECT format('ALTER TYPE %I.%I OWNER TO b2b_owner', n.nspname, t.typname)
          FROM pg_catalog.pg_type AS t
          JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
         WHERE n.nspname IN ('dwh', 'etl', 'src')
           AND t.typtype IN ('d', 'e', 'r')
           AND t.typowner <> 'b2b_owner'::regrole
        UNION ALL
        SELECT format('ALTER SERVER %I OWNER TO b2b_owner', s.srvname)
          FROM pg_catalog.pg_foreign_server AS s
         WHERE s.srvname = 'b2b_sales_source'
           AND s.srvowner <> 'b2b_owner'::regrole
    LOOP
        EXECUTE v.ddl;
    END LOOP;

    -- Nobody but the owner, unless granted below. PostgreSQL grants EXECUTE
    -- on new routines to PUBLIC by default: not in these schemas.
    REVOKE ALL ON SCHEMA dwh, etl, src FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA dwh, etl, src FROM PUBLIC, b2b_etl, b2b_reader;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA dwh, etl, src FROM PUBLIC, b2b_etl, b2b_reader;
    REVOKE ALL ON ALL ROUTINES IN SCHEMA dwh, etl, src FROM PUBLIC, b2b_etl, b2b_reader;
    ALTER DEFAULT PRIVILEGES FOR ROLE b2b_owner REVOKE EXECUTE ON ROUTINES FROM PUBLIC;

    -- The pipeline: its procedures (which run with the caller's rights), and
    -- the owner-rights functions they call: the run and step bookkeeping, the
    -- units of etl.pipeline_step (each refuses a call outside its own step:
    -- etl.assert_step_executor), the lock's release and holder, etl.validate,
    -- and etl.pipeline_idle (a plain read: the initial load DAG's sensor).
    -- Every other owner-rights function is internal: only the owner's
    -- functions call it, and b2b_etl cannot (tests/pgtap/olap/08_roles.sql
    -- enumerates them from the catalog).
    GRANT USAGE ON SCHEMA etl, dwh TO b2b_etl;
    FOR v IN
        SELECT p.oid::regprocedure AS routine
          FROM pg_catalog.pg_proc AS p
          JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('etl', 'dwh')
           AND (p.prokind = 'p'
                OR p.oid IN (to_regprocedure('etl.open_run(text, integer, boolean, text)'),
                             to_regprocedure('etl.mark_run_abandoned(bigint)'),
                             to_regprocedure('etl.begin_step(bigint, text, text)'),
                             to_regprocedure('etl.close_step(bigint, text, text, text, text, text)'),
                             to_regprocedure('etl.release_pipeline_lock()'),
                             to_regprocedure('etl.pipeline_lock_holder()'),
                             to_regprocedure('etl.pipeline_idle()'),
                             to_regprocedure('etl.validate(bigint)'),
                             to_regprocedure('dwh.date_key(date)'),
                             to_regprocedure('dwh.fact_lineage(text)'))
                OR p.oid IN (SELECT to_regprocedure(s.unit || '(bigint)') FROM etl.pipeline_step AS s))
    LOOP
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO b2b_etl', v.routine);
    END LOOP;

    EXECUTE format('ALTER ROLE b2b_etl IN DATABASE %I SET client_connection_check_interval = %L',
                   current_database(), '10s');

    -- The readers: the star schema, the reporting views and their helpers
    -- (the deal history's as-of functions among them).
    GRANT USAGE ON SCHEMA dwh TO b2b_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA dwh TO b2b_reader;
    FOR v IN
        SELECT p.oid::regprocedure AS routine
          FROM pg_catalog.pg_proc AS p
         WHERE p.oid IN (to_regprocedure('dwh.date_key(date)'),
                         to_regprocedure('dwh.fact_lineage(text)'),
                         to_regprocedure('dwh.open_pipeline_as_of(date)'),
                         to_regprocedure('dwh.stage_durations(date, date)'),
                         to_regprocedure('dwh.stage_conversion(date)'))
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO b2b_reader', v.routine);
    END LOOP;
END
$privileges$;
