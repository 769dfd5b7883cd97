-- Function: etl.cold_horizon(p_at timestamptz) RETURNS date
--     The horizon etl.config cold_horizon sets for a run that starts at
--     p_at: deals closed before it are stored cold. The setting is an
--     interval (the first day of the month that long before p_at: a month
--     moves across at a time, and every run of a month agrees), a date (as
--     given), or 'none' (NULL: every fact hot).
-- Raises: 22023 naming the value when it is none of these.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.cold_horizon(p_at timestamptz)
RETURNS date
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_setting text := btrim(etl.config_value('cold_horizon'));
BEGIN
    IF lower(v_setting) = 'none' THEN
        RETURN NULL;
    ELSIF v_setting ~ '^\d{4}-\d{2}-\d{2}$' THEN
        RETURN v_setting::date;
    END IF;
    RETURN date_trunc('month', p_at - v_setting::interval)::date;
EXCEPTION
    WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        RAISE EXCEPTION 'etl.config cold_horizon %: not an interval, a date or ''none''',
            quote_literal(v_setting)
            USING ERRCODE = '22023',
                  HINT = 'UPDATE etl.config SET value = ''2 years'' WHERE key = ''cold_horizon''; '
                         '(or a date such as ''2016-01-01'', or ''none'').';
END
$fn$;

COMMENT ON FUNCTION etl.cold_horizon(timestamptz) IS
'The horizon etl.config cold_horizon sets for a run starting at p_at (deals closed before it are '
'stored cold); NULL for ''none''; 22023 for a value that is not an interval, a date or none.';
