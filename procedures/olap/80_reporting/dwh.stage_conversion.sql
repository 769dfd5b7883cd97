-- Function: dwh.stage_conversion(p_month date) RETURNS TABLE (...)
--     Conversion between stages for the deals that entered a stage in a
--     month: per stage entered (a row of dwh.v_deal_history that starts a
--     stay in its stage, in that UTC month), how many entries there were,
--     and for each other stage how many of those deals entered it later (any
--     time up to now), with the rate. Read from dwh.deal_stage_conversion.
-- Parameters:
--     p_month - the month (any day of it)
-- Returns: one row per (stage entered, stage reached later); a stage entered
--     whose deals reached no other stage gives one row with to_stage NULL.
-- Tables: reads dwh.deal_stage_conversion, dwh.dim_deal_stage.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path
--     pinned; read-only (b2b_reader may call it).
CREATE OR REPLACE FUNCTION dwh.stage_conversion(p_month date)
RETURNS TABLE (
    from_stage text,
    entered bigint,
    to_stage text,
    converted bigint,
    conversion_rate numeric
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH month AS (
        SELECT c.from_stage_key, c.to_stage_key, c.deals
          FROM dwh.deal_stage_conversion AS c
         WHERE c.entry_month = date_trunc('month', p_month)::date AND c.deals <> 0
    ),
    entries AS (
        SELECT m.from_stage_key, m.deals FROM month AS m WHERE m.to_stage_key = m.from_stage_key
    )
    SELECT f.deal_stage_name, e.deals, t.deal_stage_name, m.deals,
           round(m.deals::numeric / nullif(e.deals, 0), 4)
      FROM entries AS e
      JOIN dwh.dim_deal_stage AS f ON f.deal_stage_key = e.from_stage_key
      LEFT JOIN month AS m ON m.from_stage_key = e.from_stage_key AND m.to_stage_key <> e.from_stage_key
      LEFT JOIN dwh.dim_deal_stage AS t ON t.deal_stage_key = m.to_stage_key
     ORDER BY f.stage_order, f.deal_stage_name, t.stage_order, t.deal_stage_name;
$fn$;

COMMENT ON FUNCTION dwh.stage_conversion(date) IS
'Conversion between stages for the deals that entered a stage in a month (UTC), from the deal history''s '
'summary dwh.deal_stage_conversion: entries per stage, and how many went on to each other stage, with the rate.';
