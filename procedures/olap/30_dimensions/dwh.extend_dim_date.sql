-- Function: dwh.extend_dim_date(p_first date, p_last date) RETURNS bigint
--     Adds the days from p_first to p_last that dim_date lacks, with all
--     their calendar attributes. Days already present are left alone.
-- Returns: the number of days added.
-- Tables: writes dwh.dim_date.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.extend_dim_date(p_first date, p_last date)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_added bigint;
BEGIN
    IF p_first IS NULL OR p_last IS NULL OR p_first > p_last THEN
        RETURN 0;
    END IF;
    INSERT INTO dwh.dim_date (
        date_key, full_date, day_of_month, day_of_week, day_name, is_weekend, iso_week, iso_year,
        month, month_name, month_start_key, quarter, year
    )
    SELECT
        dwh.date_key(d),
        d,
        extract(DAY FROM d)::smallint,
        extract(ISODOW FROM d)::smallint,
        trim(to_char(d, 'Day')),
        extract(ISODOW FROM d) >= 6,
        extract(WEEK FROM d)::smallint,
        extract(ISOYEAR FROM d)::smallint,
        extract(MONTH FROM d)::smallint,
        trim(to_char(d, 'Month')),
        to_char(d, 'YYYYMM01')::integer,
        extract(QUARTER FROM d)::smallint,
        extract(YEAR FROM d)::smallint
    FROM generate_series(p_first, p_last, interval '1 day') AS g (day_ts)
    CROSS JOIN LATERAL (SELECT g.day_ts::date AS d) AS day
    -- Only the days it lacks: the count is of days added (on Citus, where
    -- dim_date is a reference table, an INSERT ... ON CONFLICT DO NOTHING
    -- counts the rows it was given). The conflict clause stays for a day
    -- another session adds meanwhile.
    LEFT JOIN dwh.dim_date AS present ON present.date_key = dwh.date_key(day.d)
    WHERE present.date_key IS NULL
    ON CONFLICT (date_key) DO NOTHING;
    GET DIAGNOSTICS v_added = ROW_COUNT;
    RETURN v_added;
END
$fn$;

COMMENT ON FUNCTION dwh.extend_dim_date(date, date) IS
'Adds the days from p_first to p_last that dwh.dim_date lacks, with their calendar attributes; '
'returns the number added.';
