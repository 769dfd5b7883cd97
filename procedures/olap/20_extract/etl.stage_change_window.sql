-- Function: etl.stage_change_window(p_loading_metadata_id bigint) RETURNS text
--     Unit of etl.pull_change_window. In one remote transaction (one source
--     snapshot, read first), pulls exactly the changes of the transactions
--     that this snapshot sees and the last applied snapshot did not (as PgQ
--     does: a transaction that started earlier and committed later is
--     caught, whatever its change ids), and stages the net effect of the
--     window: every changed row as that same snapshot has it, read by key
--     from the source, into etl.stage_<table>; the keys of the window that
--     snapshot does not hold into etl.stage_deleted (whatever order the log's
--     rows are in: writable CTEs, MERGE and the CRM's own triggers log a
--     statement's parts in any order).
--     Deals live in two tables of the source: sales_pipeline and the archive
--     of closed deals (public.archive_closed_deals moves them there,
--     public.restore_archived_deals back). The archive's changes count as
--     the deal's (etl.change_window holds them as sales_pipeline rows); a
--     deal sales_pipeline does not hold is staged from the archive (with its
--     archived_at), and deleted only when the snapshot has it in neither.
--     The last applied snapshot is the newest of the latest successful
--     initial load and the incremental runs after it whose window was
--     applied. This run's snapshot is stored with the window; it counts as
--     applied only when the aggregate step applies it.
-- Returns: NULL (done).
-- Raises: 55000 without a successful initial load, or when the window
--     holds a T change (a source table was emptied: generate, import-csv).
-- Tables: reads src.source_snapshot, src.change_log, src.accounts,
--     src.products, src.sales_agents, src.sales_pipeline,
--     src.sales_pipeline_archive, etl.run; writes
--     etl.change_window, etl.stage_*, etl.run.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION etl.stage_change_window(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id bigint;
    v_initial etl.run;
    v_previous pg_snapshot;
    v_snapshot text;
    v_taken_at timestamptz;
    v_changes bigint;
    v_replaced text;
    v_keys text[];
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'etl.stage_change_window');
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT r.* INTO v_initial FROM etl.run AS r
     WHERE r.pipeline = 'initial_load' ORDER BY r.run_id DESC LIMIT 1;
    IF v_initial.run_id IS NULL OR v_initial.status <> 'succeeded' THEN
        RAISE EXCEPTION 'no incremental update without a successful initial load (latest: %)',
            coalesce('run ' || v_initial.run_id || ', ' || v_initial.status, 'none')
            USING ERRCODE = '55000', HINT = 'CALL etl.run_initial_load();';
    END IF;
    SELECT r.source_snapshot INTO v_previous FROM etl.run AS r
     WHERE r.window_applied AND r.run_id >= v_initial.run_id
     ORDER BY r.run_id DESC LIMIT 1;

    -- The snapshot first: the remote transaction's snapshot is taken by its first query.
    SELECT s.snapshot, s.taken_at INTO v_snapshot, v_taken_at FROM src.source_snapshot AS s;
    -- In that snapshot: does the change log still hold the whole window? (55000 if not)
    PERFORM etl.assert_window_covered(v_previous);
    TRUNCATE etl.change_window, etl.stage_accounts, etl.stage_products, etl.stage_sales_agents,
             etl.stage_sales_pipeline, etl.stage_deleted;
    INSERT INTO etl.change_window (change_id, txid, table_name, operation, row_key, row_data, changed_at)
    SELECT c.change_id, c.txid,
           -- the archive is part of the deals' key space: archiving is a
           -- delete here and an insert there in one transaction, a move and
           -- not a change of the deal
           CASE c.table_name WHEN 'sales_pipeline_archive' THEN 'sales_pipeline' ELSE c.table_name END,
           c.operation, c.row_key, c.row_data, c.changed_at
      FROM src.change_log AS c
     WHERE c.txid >= pg_snapshot_xmin(v_previous)
       AND NOT pg_visible_in_snapshot(c.txid, v_previous);
    GET DIAGNOSTICS v_changes = ROW_COUNT;

    SELECT string_agg(DISTINCT w.table_name, ', ') INTO v_replaced
      FROM etl.change_window AS w WHERE w.operation = 'T';
    IF v_replaced IS NOT NULL THEN
        RAISE EXCEPTION 'the source was replaced since the last load (% emptied)', v_replaced
            USING ERRCODE = '55000',
                  HINT = 'b2bdwh generate or import-csv replaced it: CALL etl.run_initial_load();';
    END IF;

    -- Every changed row as this snapshot has it: its net state. The keys
    -- go as one array parameter each, which postgres_fdw sends to the source
    -- (a function call in the condition would keep it here, row by row).
    v_keys := etl.window_keys('accounts');
    INSERT INTO etl.stage_accounts
    SELECT a.* FROM src.accounts AS a WHERE a.account_id = ANY (v_keys::integer[]);
    v_keys := etl.window_keys('products');
    INSERT INTO etl.stage_products
    SELECT p.* FROM src.products AS p WHERE p.product_id = ANY (v_keys::integer[]);
    v_keys := etl.window_keys('sales_agents');
    INSERT INTO etl.stage_sales_agents
    SELECT g.* FROM src.sales_agents AS g WHERE g.sales_agent_id = ANY (v_keys::integer[]);
    v_keys := etl.window_keys('sales_pipeline');
    INSERT INTO etl.stage_sales_pipeline
    SELECT p.*, NULL FROM src.sales_pipeline AS p WHERE p.opportunity_id = ANY (v_keys);
    -- The keys sales_pipeline does not hold: archived (live, marked) or deleted.
    -- (a set operation, not a correlated subquery: Citus plans the staging's
    -- side apart from the array's)
    v_keys := ARRAY(SELECT k.key FROM unnest(v_keys) AS k (key)
                    EXCEPT
                    SELECT s.opportunity_id FROM etl.stage_sales_pipeline AS s);
    IF cardinality(v_keys) > 0 THEN
        INSERT INTO etl.stage_sales_pipeline
        SELECT a.* FROM src.sales_pipeline_archive AS a WHERE a.opportunity_id = ANY (v_keys);
    END IF;
    ANALYZE etl.stage_sales_pipeline;

    -- Deleted rows: the window's keys that its snapshot no longer holds. Not
    -- "the last change is a delete": the log's order is not the order of
    -- effect (a writable CTE that deletes a key and inserts it again logs the
    -- insert first), while the snapshot is the net state by definition.
    -- (The staged keys, distributed on Citus, meet the local window through a
    -- materialised CTE: Citus joins the two only so.)
    WITH staged AS MATERIALIZED (
        SELECT 'accounts' AS table_name, a.account_id::text AS row_key FROM etl.stage_accounts AS a
        UNION ALL
        SELECT 'products', p.product_id::text FROM etl.stage_products AS p
        UNION ALL
        SELECT 'sales_agents', g.sales_agent_id::text FROM etl.stage_sales_agents AS g
        UNION ALL
        SELECT 'sales_pipeline', d.opportunity_id FROM etl.stage_sales_pipeline AS d
    )
    INSERT INTO etl.stage_deleted (table_name, row_key, deleted_at)
    SELECT w.table_name, w.row_key,
           coalesce(max(w.changed_at) FILTER (WHERE w.operation = 'D'), max(w.changed_at))
      FROM etl.change_window AS w
      LEFT JOIN staged ON staged.table_name = w.table_name AND staged.row_key = w.row_key
     WHERE w.row_key IS NOT NULL AND staged.row_key IS NULL
     GROUP BY w.table_name, w.row_key;

    UPDATE etl.run
       SET source_snapshot = v_snapshot::pg_snapshot, source_snapshot_at = v_taken_at,
           changes_in_window = v_changes
     WHERE run_id = v_run_id;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_changes, p_inserted => v_changes);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION etl.stage_change_window(bigint) IS
'Unit of etl.pull_change_window: in one source snapshot, stages the changes of the transactions it '
'sees and the last applied one did not, and the net state of every changed row.';
