-- Function: etl.add_step_counts(p_loading_metadata_id bigint, p_in bigint,
--           p_inserted bigint, p_updated bigint, p_deleted bigint,
--           p_rejected bigint, p_resume_after text) RETURNS void
--     Adds one unit of work's row counts to its step's metadata row, and
--     records where a batched step resumes. Called in the same transaction
--     as the unit it counts, so counts and data commit together.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.add_step_counts(
    p_loading_metadata_id bigint,
    p_in bigint DEFAULT 0,
    p_inserted bigint DEFAULT 0,
    p_updated bigint DEFAULT 0,
    p_deleted bigint DEFAULT 0,
    p_rejected bigint DEFAULT 0,
    p_resume_after text DEFAULT NULL
)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE etl.loading_metadata
       SET rows_in = rows_in + p_in,
           rows_inserted = rows_inserted + p_inserted,
           rows_updated = rows_updated + p_updated,
           rows_deleted = rows_deleted + p_deleted,
           rows_rejected = rows_rejected + p_rejected,
           batches = batches + 1,
           resume_after = coalesce(p_resume_after, resume_after)
     WHERE loading_metadata_id = p_loading_metadata_id;
$fn$;

COMMENT ON FUNCTION etl.add_step_counts(bigint, bigint, bigint, bigint, bigint, bigint, text) IS
'Adds one unit of work''s row counts to its step''s etl.loading_metadata row and records where a '
'batched step resumes, in the unit''s own transaction.';
