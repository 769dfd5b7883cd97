-- afterMigrate callback: run by `b2bdwh migrate` at the end of every
-- migration of the source, unrecorded. The source roles' rights,
-- re-established from the catalog:
--   - b2b_app: DML on the four CRM tables; nothing in cdc or import, nor the
--     deals' archive and its routines (a DBA's). Its changes reach
--     cdc.change_log only through the capture triggers, whose SECURITY
--     DEFINER functions write the log.
--   - b2b_cdc_reader: reads the four tables, the deals' archive and the
--     change log, keeps its own row in cdc.consumer (its applied position;
--     the purge follows from it), and reads how far the log was purged
--     (cdc.purge_horizon).
-- Does nothing before the roles exist (a source migrated up to V0004 only).

DO $privileges$
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ('b2b_app', 'b2b_cdc_reader')) < 2 THEN
        RETURN;
    END IF;

    REVOKE ALL ON SCHEMA cdc, import FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA cdc, import FROM PUBLIC, b2b_app, b2b_cdc_reader;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA cdc, import FROM PUBLIC, b2b_app, b2b_cdc_reader;
    REVOKE ALL ON ALL ROUTINES IN SCHEMA cdc FROM PUBLIC, b2b_app, b2b_cdc_reader;

    GRANT SELECT, INSERT, UPDATE, DELETE
        ON public.accounts, public.products, public.sales_agents, public.sales_pipeline TO b2b_app;
    -- The archive and its routines are a DBA's (procedures are callable by
    -- PUBLIC unless revoked).
    IF to_regclass('public.sales_pipeline_archive') IS NOT NULL THEN
        REVOKE ALL ON public.sales_pipeline_archive FROM PUBLIC, b2b_app;
        GRANT SELECT ON public.sales_pipeline_archive TO b2b_cdc_reader;
        REVOKE ALL ON PROCEDURE public.archive_closed_deals(date, integer, bigint),
                                public.restore_archived_deals(text[], bigint)
            FROM PUBLIC, b2b_app, b2b_cdc_reader;
    END IF;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO b2b_app;

    GRANT SELECT
        ON public.accounts, public.products, public.sales_agents, public.sales_pipeline TO b2b_cdc_reader;
    GRANT USAGE ON SCHEMA cdc TO b2b_cdc_reader;
    GRANT SELECT ON cdc.change_log, cdc.source_snapshot, cdc.purge_horizon TO b2b_cdc_reader;
    GRANT SELECT, INSERT, UPDATE ON cdc.consumer TO b2b_cdc_reader;
END
$privileges$;
