-- Procedure: etl.start_run(p_pipeline text, p_batch_size integer, INOUT p_run_id bigint, p_in_one_call boolean)
--     Starts a run of a pipeline and commits it: see etl.open_run, which does
--     the work with the owner's rights (this procedure commits, so it cannot
--     be SECURITY DEFINER itself).
-- Parameters:
--     p_pipeline    - 'initial_load' or 'incremental_update'
--     p_batch_size  - rows per committed batch (default: etl.config batch_size)
--     p_run_id      - OUT: the new run's id
--     p_in_one_call - true when the caller runs every step itself
-- Tables: writes etl.run (through etl.open_run).
-- Commits: yes.
CREATE OR REPLACE PROCEDURE etl.start_run(
    p_pipeline text,
    p_batch_size integer DEFAULT NULL,
    INOUT p_run_id bigint DEFAULT NULL,
    p_in_one_call boolean DEFAULT FALSE
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    p_run_id := etl.open_run(p_pipeline, p_batch_size, p_in_one_call);
    COMMIT;
END
$proc$;

COMMENT ON PROCEDURE etl.start_run(text, integer, bigint, boolean) IS  -- noqa: LT01
'Starts a run of a pipeline (initial_load or incremental_update) in etl.run and returns its id; '
'refused with 55P03 while another run is going, a dead or idle one is marked failed; commits.';
