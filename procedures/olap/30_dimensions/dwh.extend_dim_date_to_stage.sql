-- Function: dwh.extend_dim_date_to_stage(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_date. Extends dim_date to cover every staged
--     engage and close date, with date_margin_days on both sides. Dates
--     outside date_min .. date_max are left to the fact step, which points
--     them at the Unknown date (-1) and lists them as data-quality issues:
--     one bad date never grows the dimension. When days
--     were added, dim_date is analyzed: statistics taken while a rebuild had
--     emptied it (one row on many pages) made the planner count 40,000 days
--     as one and cross-join dim_date with itself in dwh.v_pipeline_by_stage.
-- Returns: NULL (done).
-- Tables: reads etl.stage_sales_pipeline, etl.config; writes dwh.dim_date.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.extend_dim_date_to_stage(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_margin integer := etl.config_value('date_margin_days')::integer;
    v_first date;
    v_last date;
    v_added bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.extend_dim_date_to_stage');
    SELECT least(min(s.engage_date) FILTER (WHERE s.engage_date BETWEEN v_min AND v_max),
                 min(s.close_date) FILTER (WHERE s.close_date BETWEEN v_min AND v_max)),
           greatest(max(s.engage_date) FILTER (WHERE s.engage_date BETWEEN v_min AND v_max),
                    max(s.close_date) FILTER (WHERE s.close_date BETWEEN v_min AND v_max))
      INTO v_first, v_last
      FROM etl.stage_sales_pipeline AS s;
    -- No staged date, nothing to add (greatest/least would ignore the NULLs).
    v_added := CASE WHEN v_first IS NULL THEN 0
                    ELSE dwh.extend_dim_date(greatest(v_first - v_margin, v_min),
                                             least(v_last + v_margin, v_max)) END;
    IF v_added > 0 THEN
        ANALYZE dwh.dim_date;
    END IF;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_inserted => v_added);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.extend_dim_date_to_stage(bigint) IS
'Unit of dwh.load_dim_date: extends dwh.dim_date over every staged engage and close date within '
'date_min .. date_max, plus date_margin_days.';
