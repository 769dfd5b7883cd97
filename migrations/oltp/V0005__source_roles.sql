-- Source roles (CONTRACT "Roles"). Roles belong to the cluster, so this
-- file may meet them already made: each is created only when missing.
-- No passwords: a DBA sets them outside the repository (the warehouse's
-- user mapping takes the capture reader's from B2B_OLTP_PASSWORD).
--   b2b_app         the CRM application: DML on the four tables, nothing in cdc.
--   b2b_cdc_reader  what the warehouse's foreign server logs in as: reads the
--                   four tables and the change log, reports its position.
-- Grants are (re)applied by migrations/oltp/afterMigrate.sql after every
-- deployment.

DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['b2b_app', 'b2b_cdc_reader'] LOOP
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

COMMENT ON ROLE b2b_app IS 'The CRM application: DML on the four source tables, no access to cdc.';
COMMENT ON ROLE b2b_cdc_reader IS
'The warehouse''s foreign server: reads the source tables and cdc.change_log, reports its position.';
