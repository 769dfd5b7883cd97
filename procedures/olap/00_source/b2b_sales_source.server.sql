-- Configuration: foreign server b2b_sales_source and its user mapping
--     Points the warehouse at the source database named by the settings
--     (B2B_OLTP_DSN / PGHOST / PGPORT / PGUSER, resolved by `b2bdwh migrate`).
--     Re-applied whenever those settings change (the runner checksums this
--     file after replacing its placeholders).
-- Placeholders: each one stands for a complete, quoted string literal (the
--     runner quotes the value), so they appear bare and only here, outside the
--     DO block: its dollar-quoted body is text that a value could end. The DO
--     block reads them back from transaction-local settings.
-- Password: never stored in the repository. Set B2B_OLTP_PASSWORD when the
--     source needs one; it goes into the user mapping only.
SELECT
    set_config('b2bdwh.oltp_host', ${oltp_host}, TRUE) AS oltp_host,
    set_config('b2bdwh.oltp_port', ${oltp_port}, TRUE) AS oltp_port,
    set_config('b2bdwh.oltp_dbname', ${oltp_dbname}, TRUE) AS oltp_dbname,
    set_config('b2bdwh.oltp_user', ${oltp_user}, TRUE) AS oltp_user,
    set_config('b2bdwh.oltp_password', ${oltp_password}, TRUE) IS NOT NULL AS oltp_password;

DO $config$
DECLARE
    v_options text[] := ARRAY[
        'host', current_setting('b2bdwh.oltp_host'),
        'port', current_setting('b2bdwh.oltp_port'),
        'dbname', current_setting('b2bdwh.oltp_dbname'),
        'fetch_size', '50000', 'application_name', 'b2b_sales_olap'
    ];
    v_user_options text[] := ARRAY['user', current_setting('b2bdwh.oltp_user')];
    v_password text := current_setting('b2bdwh.oltp_password');
    v_sets text;
    i int;
BEGIN
    -- Server options: ADD those missing, SET those present.
    SELECT string_agg(
               format('%s %I %L',
                      CASE WHEN o.name = ANY (coalesce(
                          (SELECT array_agg(split_part(x, '=', 1)) FROM pg_foreign_server s,
                               unnest(s.srvoptions) x WHERE s.srvname = 'b2b_sales_source'),
                          '{}')) THEN 'SET' ELSE 'ADD' END,
                      o.name, o.value), ', ')
      INTO v_sets
      FROM (SELECT v_options[2 * g - 1] AS name, v_options[2 * g] AS value
              FROM generate_series(1, array_length(v_options, 1) / 2) g) o;
    EXECUTE format('ALTER SERVER b2b_sales_source OPTIONS (%s)', v_sets);

    IF v_password <> '' THEN
        v_user_options := v_user_options || ARRAY['password', v_password];
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        -- Lets non-superusers (the ETL role) use a mapping without a password,
        -- for sources that trust local connections.
        v_user_options := v_user_options || ARRAY['password_required', 'false'];
    END IF;
    DROP USER MAPPING IF EXISTS FOR PUBLIC SERVER b2b_sales_source;
    v_sets := '';
    FOR i IN 1 .. array_length(v_user_options, 1) / 2 LOOP
        v_sets := v_sets || CASE WHEN i > 1 THEN ', ' ELSE '' END
            || format('%I %L', v_user_options[2 * i - 1], v_user_options[2 * i]);
    END LOOP;
    EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER b2b_sales_source OPTIONS (%s)', v_sets);
END
$config$;
