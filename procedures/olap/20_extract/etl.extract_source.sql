-- Procedure: etl.extract_source(p_run_id bigint)
--     Initial load, first step: stages the whole source as of one snapshot
--     and clears the star schema for the rebuild, in one transaction
--     (unit: etl.stage_source).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads src.*; writes etl.stage_*, etl.run, every dwh table.
-- Commits: once. Safe to re-run: yes (stages again; later steps start over).
CREATE OR REPLACE PROCEDURE etl.extract_source(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'etl.extract_source', 'etl.stage_*', 'etl.stage_source');
END
$proc$;

COMMENT ON PROCEDURE etl.extract_source(bigint) IS  -- noqa: LT01
'Initial load, first step: stages the whole source as of one snapshot into etl.stage_* and clears the'
' star schema, in one transaction (unit etl.stage_source).';
