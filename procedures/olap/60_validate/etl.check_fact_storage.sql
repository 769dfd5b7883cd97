-- Function: etl.check_fact_storage(p_run_id bigint, p_window boolean) RETURNS void
--     Validation of where the facts are stored (dwh.fact_sales_performance's
--     hot and cold parts), against the horizon in etl.fact_storage:
--       - one fact per opportunity across the two parts (each part's
--         primary key holds within it; dwh.keep_one_fact_per_opportunity
--         keeps it across them as rows are written);
--       - every fact is in the part dwh.is_cold_fact places it in.
--     Whole (p_window false: an initial load and a horizon move, which
--     place every fact): the two parts joined by opportunity_id, and every
--     fact read once. Window (p_window true: an incremental update): the
--     facts of the window's deals only, by key. Records two rows in
--     etl.validation_result.
-- Parameters:
--     p_run_id - the run to check
--     p_window - check the run's window only (etl.stage_sales_pipeline)
-- Tables: reads dwh.fact_sales_performance, etl.fact_storage,
--     etl.stage_sales_pipeline; writes etl.validation_result.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: called by etl.validate.
CREATE OR REPLACE FUNCTION etl.check_fact_storage(p_run_id bigint, p_window boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_cold_before date := (SELECT s.cold_before FROM etl.fact_storage AS s);
    v_horizon text := coalesce('closed before ' || v_cold_before, 'none: every fact hot');
BEGIN
    IF p_window THEN
        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'one fact per opportunity across the hot and cold parts', c.doubled = 0,
               '0 of ' || c.deals, c.doubled::text, CASE WHEN c.doubled > 0 THEN c.sample END
          FROM (SELECT count(*) AS deals, count(*) FILTER (WHERE x.facts > 1) AS doubled,
                       jsonb_agg(x.opportunity_id) FILTER (WHERE x.facts > 1) AS sample
                  FROM (SELECT s.opportunity_id,
                               (SELECT count(*) FROM dwh.fact_sales_performance AS f
                                 WHERE f.opportunity_id = s.opportunity_id) AS facts
                          FROM etl.stage_sales_pipeline AS s) AS x) AS c;

        INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
        SELECT p_run_id, 'facts are stored where the horizon places them', c.misplaced = 0,
               '0 of ' || c.facts, c.misplaced::text,
               jsonb_build_object('horizon', v_horizon, 'misplaced', c.sample)
          FROM (SELECT count(*) AS facts, count(*) FILTER (WHERE x.misplaced) AS misplaced,
                       jsonb_agg(x.opportunity_id) FILTER (WHERE x.misplaced) AS sample
                  FROM (SELECT f.opportunity_id,
                               f.is_cold <> dwh.is_cold_fact(f.is_closed, f.close_date_key, v_cold_before)
                                   AS misplaced
                          FROM etl.stage_sales_pipeline AS s
                          JOIN dwh.fact_sales_performance AS f ON f.opportunity_id = s.opportunity_id) AS x
               ) AS c;
        RETURN;
    END IF;

    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'one fact per opportunity across the hot and cold parts', c.doubled = 0, '0',
           c.doubled::text, CASE WHEN c.doubled > 0 THEN c.sample END
      FROM (SELECT count(*) AS doubled, jsonb_agg(h.opportunity_id) AS sample
              FROM dwh.fact_sales_performance_hot AS h
              JOIN dwh.fact_sales_performance_cold AS k ON k.opportunity_id = h.opportunity_id) AS c;

    INSERT INTO etl.validation_result (run_id, check_name, passed, expected, actual, details)
    SELECT p_run_id, 'facts are stored where the horizon places them', c.misplaced = 0,
           '0 of ' || c.facts, c.misplaced::text,
           jsonb_build_object('horizon', v_horizon, 'hot', c.hot, 'cold', c.cold)
      FROM (SELECT count(*) AS facts,
                   count(*) FILTER (WHERE f.is_cold <> dwh.is_cold_fact(f.is_closed, f.close_date_key,
                                                                         v_cold_before)) AS misplaced,
                   count(*) FILTER (WHERE NOT f.is_cold) AS hot,
                   count(*) FILTER (WHERE f.is_cold) AS cold
              FROM dwh.fact_sales_performance AS f) AS c;
END
$fn$;

COMMENT ON FUNCTION etl.check_fact_storage(bigint, boolean) IS
'Validation of the facts'' storage: one fact per opportunity across the hot and cold parts, each in the '
'part the horizon (etl.fact_storage) places it; the whole table, or the window''s deals.';
