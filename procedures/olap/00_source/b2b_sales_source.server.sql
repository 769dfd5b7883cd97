-- Configuration: foreign server b2b_sales_source and its user mapping
--     Points the warehouse at the source database named by the settings
--     (B2B_OLTP_DSN / PGHOST / PGPORT / PGUSER, resolved by `b2bdwh migrate`).
--     Re-applied whenever those settings change (the runner checksums this
--     file after replacing its placeholders).
-- Password: never stored in the repository. Set B2B_OLTP_PASSWORD when the
--     source needs one; it goes into the user mapping only.
DO $config$
DECLARE
    v_options text[] := ARRAY[
        'host', '${oltp_host}', 'port', '${oltp_port}', 'dbname', '${oltp_dbname}',
        'fetch_size', '50000', 'application_name', 'b2b_sales_olap'
    ];
    v_user_options text[] := ARRAY['user', '${oltp_user}'];
    v_password text := '${oltp_password}';
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
