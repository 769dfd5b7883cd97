-- Function: dwh.upsert_dim_account(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_account (SCD type 1). Inserts staged accounts
--     that are new, overwrites the attributes of those that changed (and
--     revives one that was marked deleted), in business-key order so that a
--     rebuild gives the same surrogate keys, and marks the rows the window
--     deleted (etl.stage_deleted) as deleted. Unchanged rows are not touched.
--     Then lists the staged accounts whose sector or office_location is a
--     rare value resembling a frequent one (dwh.list_rare_account_values).
-- Returns: NULL (done).
-- Tables: reads etl.stage_accounts, etl.stage_deleted; writes dwh.dim_account,
--     etl.data_quality_issue.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.upsert_dim_account(p_loading_metadata_id bigint)
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
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.upsert_dim_account');
    v_written_at := clock_timestamp();
    SELECT m.run_id INTO v_run_id FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    WITH upserted AS (
        INSERT INTO dwh.dim_account AS d (
            account_id, account_name, sector, year_established, revenue, employees,
            office_location, parent_account_id, is_deleted, run_id, updated_at
        )
        SELECT s.account_id, s.account_name, s.sector, s.year_established, s.revenue, s.employees,
               s.office_location, s.parent_account_id, false, v_run_id, v_written_at
          FROM etl.stage_accounts AS s
         ORDER BY s.account_id
        ON CONFLICT (account_id) DO UPDATE
           SET account_name = excluded.account_name, sector = excluded.sector,
               year_established = excluded.year_established, revenue = excluded.revenue,
               employees = excluded.employees, office_location = excluded.office_location,
               parent_account_id = excluded.parent_account_id, is_deleted = false,
               run_id = excluded.run_id, updated_at = excluded.updated_at
         WHERE (d.account_name, d.sector, d.year_established, d.revenue, d.employees,
                d.office_location, d.parent_account_id, d.is_deleted)
               IS DISTINCT FROM
               (excluded.account_name, excluded.sector, excluded.year_established, excluded.revenue,
                excluded.employees, excluded.office_location, excluded.parent_account_id, false)
        RETURNING (d.xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE u.inserted), count(*) FILTER (WHERE NOT u.inserted)
      INTO v_inserted, v_updated
      FROM upserted AS u;
    -- Rows deleted in the source: marked, never erased.
    UPDATE dwh.dim_account AS d
       SET is_deleted = true, run_id = v_run_id, updated_at = v_written_at
      FROM etl.stage_deleted AS x
     WHERE x.table_name = 'accounts' AND d.account_id = x.row_key::integer AND NOT d.is_deleted;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    PERFORM dwh.list_rare_account_values(v_run_id);
    SELECT count(*) INTO v_in FROM etl.stage_accounts;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_updated, p_deleted => v_deleted);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.upsert_dim_account(bigint) IS
'Unit of dwh.load_dim_account: inserts new accounts, overwrites changed ones (reviving deleted ones) '
'in business-key order, marks the window''s deleted accounts deleted, and lists rare attribute values '
'resembling frequent ones as data-quality issues.';
