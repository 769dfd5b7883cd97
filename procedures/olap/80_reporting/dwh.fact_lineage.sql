-- Function: dwh.fact_lineage(p_opportunity_id text) RETURNS TABLE (...)
--     Where a fact row came from: the etl run that last wrote it (its id,
--     pipeline, status, start and end, and the source snapshot it read) and
--     the source changes that run applied to the deal.
--       - Incremental run: the deal's changes (sales_pipeline rows of
--         etl.change_window), one row each. LIMITATION: etl.change_window
--         holds only the window of the latest run that pulled or extracted
--         (each pull overwrites it; an initial load empties it; it is unlogged,
--         so a server crash empties it too). For an older run the changes are
--         no longer in the warehouse: one row comes back with the change
--         columns NULL and a note saying so. The source's cdc.change_log may
--         still hold them until it is purged (etl.config change_retention).
--       - Initial load: no change rows; the deal is as the run's extract
--         snapshot (source_snapshot, taken at source_snapshot_at) had it.
--     Nothing else is recorded per fact: this is all the lineage there is.
-- Parameters:
--     p_opportunity_id - the deal's business key
-- Returns: no row when there is no such fact.
-- Tables: reads dwh.fact_sales_performance, etl.run, etl.loading_metadata,
--     etl.change_window.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.fact_lineage(p_opportunity_id text)
RETURNS TABLE (
    opportunity_id text,
    is_deleted boolean,
    run_id bigint,
    pipeline text,
    run_status text,
    run_started_at timestamptz,
    run_finished_at timestamptz,
    source_snapshot text,
    source_snapshot_at timestamptz,
    change_id bigint,
    txid xid8,
    operation char(1),
    changed_at timestamptz,
    note text
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH fact AS (
        SELECT f.opportunity_id, f.is_deleted, r.*,
               -- The run whose window etl.change_window holds: the latest that pulled
               -- or extracted (an extract empties it).
               r.run_id = (SELECT max(m.run_id) FROM etl.loading_metadata AS m
                            WHERE m.step IN ('etl.pull_change_window', 'etl.extract_source'))
                   AS window_held
          FROM dwh.fact_sales_performance AS f
          JOIN etl.run AS r ON r.run_id = f.run_id
         WHERE f.opportunity_id = p_opportunity_id
    ),
    changes AS (
        SELECT w.change_id, w.txid, w.operation, w.changed_at
          FROM etl.change_window AS w, fact
         WHERE fact.pipeline = 'incremental_update' AND fact.window_held
           AND w.table_name = 'sales_pipeline' AND w.row_key = p_opportunity_id
    )
    SELECT fact.opportunity_id, fact.is_deleted, fact.run_id, fact.pipeline, fact.status,
           fact.started_at, fact.finished_at, fact.source_snapshot::text, fact.source_snapshot_at,
           c.change_id, c.txid, c.operation, c.changed_at,
           CASE
               WHEN fact.pipeline = 'initial_load' THEN
                   'initial load: the deal as the extract snapshot had it'
               WHEN c.change_id IS NOT NULL THEN 'source change applied by the run'
               WHEN fact.window_held THEN
                   'the run''s window holds no change of this deal (rewritten for another reason)'
               ELSE 'the run''s window is no longer in etl.change_window (a later run replaced it)'
           END
      FROM fact
      LEFT JOIN changes AS c ON TRUE
     ORDER BY c.change_id;
$fn$;

COMMENT ON FUNCTION dwh.fact_lineage(text) IS
'Lineage of one fact: the etl run that last wrote it and, while etl.change_window still holds that '
'run''s window, the source changes it applied to the deal (one row per change).';
