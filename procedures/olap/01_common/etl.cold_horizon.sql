-- Function: etl.cold_horizon(p_at timestamptz) RETURNS date
--     The horizon etl.config cold_horizon sets for a run that starts at
--     p_at: deals closed before it are stored cold. The setting is an
--     interval (the first day of the month that long before p_at: a month
--     moves across at a time, and every run of a month agrees), a date as
--     YYYY-MM-DD (as given), or 'none' (NULL: every fact hot). etl.open_run
--     reads it before an initial load or a horizon move starts, so a value
--     that is none of these stops the run before it changes anything.
-- Raises: 22023 naming the value when it is none of these, and for an
--     interval that is not positive ('-1 year', '2 years ago': a horizon
--     after the run's start) or a bare number (PostgreSQL reads '20170601'
--     as that many seconds).
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
    ELSIF v_setting !~ '^[+-]?[\d.]+$' AND v_setting::interval > interval '0' THEN
        RETURN date_trunc('month', p_at - v_setting::interval)::date;
    END IF;
    RAISE invalid_datetime_format;
EXCEPTION
    WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        RAISE EXCEPTION 'etl.config cold_horizon %: not a positive interval, a date as YYYY-MM-DD or ''none''',
            quote_literal(v_setting)
            USING ERRCODE = '22023',
                  HINT = 'UPDATE etl.config SET value = ''2 years'' WHERE key = ''cold_horizon''; '
                         '(or a date such as ''2016-01-01'', or ''none'').';
END
$fn$;

COMMENT ON FUNCTION etl.cold_horizon(timestamptz) IS
'The horizon etl.config cold_horizon sets for a run starting at p_at (deals closed before it are '
'stored cold); NULL for ''none''; 22023 for a value that is not a positive interval, a date as YYYY-MM-DD '
'or none.';
