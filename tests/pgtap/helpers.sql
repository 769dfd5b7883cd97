-- Shared helpers for the warehouse's pgTAP files, installed in the test
-- template (never by the migrations).
CREATE SCHEMA IF NOT EXISTS tests;

-- tests.open_step(pipeline, step, table): a running run with one open step,
-- as etl.start_run and etl.begin_step would leave them, without the
-- pipeline lock and without committing. Returns the loading_metadata id to
-- pass to a unit function.
CREATE OR REPLACE FUNCTION tests.open_step(p_pipeline text, p_step text, p_table text)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_run_id bigint;
    v_id bigint;
BEGIN
    SELECT run_id INTO v_run_id FROM etl.run WHERE status = 'running';
    IF v_run_id IS NULL THEN
        INSERT INTO etl.run (pipeline, batch_size, source_snapshot_at)
        VALUES (p_pipeline, 1000, now())
        RETURNING run_id INTO v_run_id;
    END IF;
    INSERT INTO etl.loading_metadata (run_id, step, table_name)
    VALUES (v_run_id, p_step, p_table)
    ON CONFLICT (run_id, step, table_name) DO UPDATE SET status = 'running'
    RETURNING loading_metadata_id INTO v_id;
    RETURN v_id;
END
$fn$;

-- tests.stage(...): one staged opportunity with sensible defaults.
CREATE OR REPLACE FUNCTION tests.stage_deal(
    p_opportunity_id text,
    p_deal_stage text DEFAULT 'Won',
    p_engage_date date DEFAULT '2017-01-10',
    p_close_date date DEFAULT '2017-02-10',
    p_close_value numeric DEFAULT 1000,
    p_account_id integer DEFAULT 1,
    p_product_id integer DEFAULT 1,
    p_sales_agent_id integer DEFAULT 1
)
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO etl.stage_sales_pipeline (
        opportunity_id, sales_agent_id, product_id, account_id, deal_stage,
        engage_date, close_date, close_value
    ) VALUES (
        p_opportunity_id, p_sales_agent_id, p_product_id, p_account_id, p_deal_stage,
        p_engage_date, p_close_date, p_close_value
    );
$fn$;

-- tests.end_run(status): ends the running run (as etl.finish_run or a failed
-- step would, without committing) so that the next tests.open_step starts a
-- new run. Returns the ended run's id.
CREATE OR REPLACE FUNCTION tests.end_run(p_status text DEFAULT 'succeeded')
RETURNS bigint
LANGUAGE sql
AS $fn$
    UPDATE etl.run
       SET status = p_status, finished_at = clock_timestamp()
     WHERE status = 'running'
    RETURNING run_id;
$fn$;

-- tests.running_run(): the id of the running run, or NULL.
CREATE OR REPLACE FUNCTION tests.running_run()
RETURNS bigint
LANGUAGE sql
STABLE
AS $fn$
    SELECT run_id FROM etl.run WHERE status = 'running';
$fn$;

-- tests.run_unit(pipeline, step, table, unit): opens the step (tests.open_step)
-- and calls its unit function until it says it is done, as etl.run_step
-- would but without committing. Returns the number of calls. A unit that
-- reports a failure (any answer but NULL or 'more') raises it.
CREATE OR REPLACE FUNCTION tests.run_unit(p_pipeline text, p_step text, p_table text, p_unit regproc)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_id bigint := tests.open_step(p_pipeline, p_step, p_table);
    v_outcome text;
    v_calls integer := 0;
BEGIN
    LOOP
        EXECUTE format('SELECT %s($1)', p_unit) INTO v_outcome USING v_id;
        v_calls := v_calls + 1;
        EXIT WHEN v_outcome IS DISTINCT FROM 'more';
        IF v_calls >= 100000 THEN
            RAISE EXCEPTION '% still says more after % calls', p_unit, v_calls;
        END IF;
    END LOOP;
    IF v_outcome IS NOT NULL THEN
        RAISE EXCEPTION '% failed: %', p_unit, v_outcome;
    END IF;
    UPDATE etl.loading_metadata SET status = 'succeeded', finished_at = clock_timestamp()
     WHERE loading_metadata_id = v_id;
    RETURN v_calls;
END
$fn$;

-- tests.stage_small_source(): a small, consistent source in staging: three
-- accounts, two products, two agents (no deals: add them with tests.stage_deal).
CREATE OR REPLACE FUNCTION tests.stage_small_source()
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO etl.stage_accounts (
        account_id, account_name, sector, year_established, revenue, employees, office_location,
        parent_account_id
    ) VALUES
    (1, 'Acme Corporation', 'technology', 1996, 1100.04, 2822, 'United States', NULL),
    (2, 'Betasoloin', 'medical', 1999, 251.41, 495, 'United States', NULL),
    (3, 'Cancity', 'retail', 2001, 718.62, 2448, 'United States', 1);
    INSERT INTO etl.stage_products (product_id, product_name, series, sales_price) VALUES
    (1, 'GTX Basic', 'GTX', 550),
    (2, 'MG Special', 'MG', 55);
    INSERT INTO etl.stage_sales_agents (sales_agent_id, sales_agent_name, manager_name, regional_office)
    VALUES
    (1, 'Moses Frase', 'Dustin Brinkmann', 'Central'),
    (2, 'Darcel Schlecht', 'Melvin Marxen', 'Central');
$fn$;

-- tests.load_staged(pipeline): every unit of a load over what is staged, in
-- the pipeline's order (dates, accounts, agents, products, facts, monthly
-- aggregate), in the caller's transaction. Returns the run's id.
CREATE OR REPLACE FUNCTION tests.load_staged(p_pipeline text DEFAULT 'initial_load')
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_dim_date', 'dwh.dim_date', 'dwh.extend_dim_date_to_stage');
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_dim_account', 'dwh.dim_account', 'dwh.upsert_dim_account');
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_dim_sales_agent', 'dwh.dim_sales_agent',
                           'dwh.upsert_dim_sales_agent');
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions');
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                           'dwh.insert_fact_batch');
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_fact_sales_monthly_aggregate',
                           'dwh.fact_sales_monthly_aggregate', 'dwh.rebuild_monthly_aggregate');
    RETURN tests.running_run();
END
$fn$;

-- tests.second_session(name, dbname): opens a dblink connection named name to
-- a database of this cluster (this one by default): another backend, for lock
-- tests. False when dblink is missing or the server cannot be reached that
-- way. The caller creates the dblink extension first (in its transaction).
CREATE OR REPLACE FUNCTION tests.second_session(p_name text, p_dbname text DEFAULT current_database())
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
BEGIN
    EXECUTE 'SELECT dblink_connect($1, $2)' USING p_name, format(
        'host=%s port=%s dbname=%s user=%s',
        trim(split_part(current_setting('unix_socket_directories'), ',', 1)),
        current_setting('port'), p_dbname, current_user);
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'no second session: %', SQLERRM;
    RETURN false;
END
$fn$;

-- tests.holds_pipeline_lock(): whether this session holds the pipeline lock
-- (the advisory lock etl.begin_step takes), read from pg_locks directly.
CREATE OR REPLACE FUNCTION tests.holds_pipeline_lock()
RETURNS boolean
LANGUAGE sql
STABLE
AS $fn$
    SELECT EXISTS (
        SELECT FROM pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
           AND l.classid = 1647469175::oid AND l.objid = 1::oid AND l.objsubid = 2);
$fn$;
-- tests.uncommented(table): what of a table lacks a COMMENT: '(table)' for
-- the table itself, then its uncommented columns in order; NULL when all
-- carry one.
CREATE OR REPLACE FUNCTION tests.uncommented(p_table regclass)
RETURNS text[]
LANGUAGE sql
STABLE
AS $fn$
    SELECT array_agg(m.x ORDER BY m.n)
      FROM (SELECT '(table)' AS x, 0 AS n
             WHERE obj_description(p_table, 'pg_class') IS NULL
            UNION ALL
            SELECT a.attname::text, a.attnum
              FROM pg_attribute AS a
             WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
               AND col_description(a.attrelid, a.attnum) IS NULL) AS m;
$fn$;
