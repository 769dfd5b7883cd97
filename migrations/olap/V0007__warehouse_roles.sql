-- Warehouse roles (CONTRACT "Roles"). Roles belong to the cluster, so this
-- file may meet them already made by another database's migrations: each is
-- created only when missing, and a concurrent creator is tolerated.
-- No passwords: a DBA sets them (or uses peer/cert authentication) outside
-- the repository.
--   b2b_owner   owns the warehouse's schemas and objects; deploys.
--   b2b_etl     may only execute the pipeline's procedures.
--   b2b_reader  may only read dwh (the star schema and reporting views).
-- Ownership and grants are (re)applied by migrations/olap/afterMigrate.sql
-- after every deployment, so objects created later get them too.

DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['b2b_owner', 'b2b_etl', 'b2b_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent migration
            END;
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE b2b_owner IS 'Owns and deploys the B2B sales warehouse (b2b_sales_olap).';
COMMENT ON ROLE b2b_etl IS 'Runs the B2B sales warehouse pipeline: EXECUTE on its procedures only.';
COMMENT ON ROLE b2b_reader IS 'Reads the B2B sales warehouse: SELECT on schema dwh only.';

-- The owner sees every backend in pg_stat_activity: etl.start_run checks
-- whether a run's driver is still connected, whoever started it.
GRANT pg_read_all_stats TO b2b_owner;
-- Needed to own the foreign server.
GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO b2b_owner;
