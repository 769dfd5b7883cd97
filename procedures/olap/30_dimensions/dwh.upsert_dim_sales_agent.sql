-- Function: dwh.upsert_dim_sales_agent(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_sales_agent (SCD type 1). Inserts staged agents
--     that are new, overwrites the attributes of those that changed (and
--     revives one that was marked deleted), in business-key order so that a
--     rebuild gives the same surrogate keys, and marks the rows the window
--     deleted (etl.stage_deleted) as deleted. Unchanged rows are not touched.
-- Returns: NULL (done).
-- Tables: reads etl.stage_sales_agents, etl.stage_deleted; writes dwh.dim_sales_agent.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.upsert_dim_sales_agent(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- When the rows are written: a value, since Citus evaluates no volatile
    -- function in a write to a reference table.
    v_written_at timestamptz;
    v_run_id bigint;
    v_in bigint;
    v_inserted bigint;
    v_updated bigint;
    v_deleted bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.upsert_dim_sales_agent');
    v_written_at := clock_timestamp();
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    WITH upserted AS (
        INSERT INTO dwh.dim_sales_agent AS d (
            sales_agent_id, sales_agent_name, manager_name, regional_office, is_deleted, run_id,
            updated_at
        )
        SELECT s.sales_agent_id, s.sales_agent_name, s.manager_name, s.regional_office, false,
               v_run_id, v_written_at
          FROM etl.stage_sales_agents AS s
         ORDER BY s.sales_agent_id
        ON CONFLICT (sales_agent_id) DO UPDATE
           SET sales_agent_name = excluded.sales_agent_name, manager_name = excluded.manager_name,
               regional_office = excluded.regional_office, is_deleted = false,
               run_id = excluded.run_id, updated_at = excluded.updated_at
         WHERE (d.sales_agent_name, d.manager_name, d.regional_office, d.is_deleted)
               IS DISTINCT FROM
               (excluded.sales_agent_name, excluded.manager_name, excluded.regional_office, false)
        RETURNING (d.xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE u.inserted), count(*) FILTER (WHERE NOT u.inserted)
      INTO v_inserted, v_updated
      FROM upserted AS u;
    -- Rows deleted in the source: marked, never erased.
    UPDATE dwh.dim_sales_agent AS d
       SET is_deleted = true, run_id = v_run_id, updated_at = v_written_at
      FROM etl.stage_deleted AS x
     WHERE x.table_name = 'sales_agents' AND d.sales_agent_id = x.row_key::integer AND NOT d.is_deleted;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    SELECT count(*) INTO v_in FROM etl.stage_sales_agents;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_updated, p_deleted => v_deleted);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.upsert_dim_sales_agent(bigint) IS
'Unit of dwh.load_dim_sales_agent: inserts new agents, overwrites changed ones (reviving deleted '
'ones) in business-key order, and marks the window''s deleted agents deleted.';
