-- Shared helpers for the warehouse's pgTAP files, installed in the test
-- template (never by the migrations).
CREATE SCHEMA IF NOT EXISTS tests;

-- tests.open_step(pipeline, step, table): a running run with one open step,
-- as etl.start_run and etl.begin_step would leave them (this session its
-- executor, holding the pipeline lock), without committing. Returns the loading_metadata id to
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
    INSERT INTO etl.loading_metadata (run_id, step, table_name, executor_pid)
    VALUES (v_run_id, p_step, p_table, pg_backend_pid())
    ON CONFLICT (run_id, step, table_name) DO UPDATE SET status = 'running', executor_pid = pg_backend_pid()
    RETURNING loading_metadata_id INTO v_id;
    -- Units run only for a step their session executes holding the pipeline lock
    -- (etl.assert_step_executor): this session takes it for the rest of the
    -- file unless it holds it already (tests.drop_pipeline_lock gives it back).
    IF NOT tests.holds_pipeline_lock() THEN
        PERFORM pg_advisory_lock(1647469175, 1);
    END IF;
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
    IF p_pipeline = 'incremental_update' THEN
        PERFORM tests.run_unit(p_pipeline, 'dwh.load_deal_history', 'dwh.fact_deal_history',
                               'dwh.apply_deal_history');
    END IF;
    PERFORM tests.run_unit(p_pipeline, 'dwh.load_fact_sales_performance', 'dwh.fact_sales_performance',
                           'dwh.insert_fact_batch');
    IF p_pipeline = 'initial_load' THEN
        PERFORM tests.run_unit(p_pipeline, 'dwh.load_deal_history', 'dwh.fact_deal_history',
                               'dwh.apply_deal_history');
    END IF;
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

-- tests.new_window(): empties the change window and everything staged from
-- it, as etl.stage_change_window does first, so that a test can build the
-- next window by hand.
CREATE OR REPLACE FUNCTION tests.new_window()
RETURNS void
LANGUAGE sql
AS $fn$
    TRUNCATE etl.change_window, etl.stage_accounts, etl.stage_products, etl.stage_sales_agents,
             etl.stage_sales_pipeline, etl.stage_deleted;
$fn$;

-- tests.capture(table, operation, key, txid, changed_at, row_data): one change
-- appended to etl.change_window as the source's capture logs it (change ids
-- in call order; row_data only for I and U of products).
CREATE OR REPLACE FUNCTION tests.capture(
    p_table text,
    p_operation text,
    p_row_key text,
    p_txid bigint,
    p_changed_at timestamptz,
    p_row_data jsonb DEFAULT NULL
)
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO etl.change_window (change_id, txid, table_name, operation, row_key, row_data, changed_at)
    SELECT coalesce(max(w.change_id), 0) + 1, p_txid::text::xid8, p_table, p_operation, p_row_key,
           p_row_data, p_changed_at
      FROM etl.change_window AS w;
$fn$;

-- tests.capture_product(operation, product_id, txid, changed_at, name, series,
-- price): one product change in etl.change_window, with the new image for I
-- and U (none for D), as the capture triggers log it.
CREATE OR REPLACE FUNCTION tests.capture_product(
    p_operation text,
    p_product_id integer,
    p_txid bigint,
    p_changed_at timestamptz,
    p_product_name text DEFAULT NULL,
    p_series text DEFAULT NULL,
    p_sales_price numeric DEFAULT NULL
)
RETURNS void
LANGUAGE sql
AS $fn$
    SELECT tests.capture(
        'products', p_operation, p_product_id::text, p_txid, p_changed_at,
        CASE WHEN p_operation <> 'D' THEN jsonb_build_object(
            'product_id', p_product_id, 'product_name', p_product_name, 'series', p_series,
            'sales_price', p_sales_price) END);
$fn$;

-- tests.source_dbname(): the database the foreign server b2b_sales_source
-- reads, for a second session there (tests.second_session(name, tests.source_dbname())).
CREATE OR REPLACE FUNCTION tests.source_dbname()
RETURNS text
LANGUAGE sql
STABLE
AS $fn$
    SELECT substr(o, length('dbname=') + 1)
      FROM pg_foreign_server AS s, unnest(s.srvoptions) AS o
     WHERE s.srvname = 'b2b_sales_source' AND o LIKE 'dbname=%';
$fn$;

-- tests.attempt(sql): runs a statement, keeping what it did when it succeeds
-- and nothing when it fails (a subtransaction); returns NULL or the error's
-- SQLSTATE. For a sequence of units whose end state is what is asserted.
CREATE OR REPLACE FUNCTION tests.attempt(p_sql text)
RETURNS text
LANGUAGE plpgsql
AS $fn$
BEGIN
    EXECUTE p_sql;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$fn$;

-- tests.drop_pipeline_lock(): gives back every hold this session has on the
-- pipeline lock (tests.open_step keeps it for the rest of a file).
CREATE OR REPLACE FUNCTION tests.drop_pipeline_lock()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    WHILE tests.holds_pipeline_lock() LOOP
        PERFORM pg_advisory_unlock(1647469175, 1);
    END LOOP;
END
$fn$;

-- tests.steps_succeeded(run, step): marks every step of the run's pipeline
-- before the given one succeeded, in order (as a run that got that far leaves
-- them), so that etl.begin_step lets the given step begin.
CREATE OR REPLACE FUNCTION tests.steps_succeeded(p_run_id bigint, p_step text)
RETURNS void
LANGUAGE sql
AS $fn$
    INSERT INTO etl.loading_metadata (run_id, step, table_name, status, finished_at)
    SELECT r.run_id, s.step, s.table_name, 'succeeded', clock_timestamp() + s.position * interval '1 ms'
      FROM etl.run AS r
      JOIN etl.pipeline_step AS s ON s.pipeline = r.pipeline
     WHERE r.run_id = p_run_id
       AND s.position < (SELECT t.position FROM etl.pipeline_step AS t
                          WHERE t.pipeline = r.pipeline AND t.step = p_step)
     ORDER BY s.position;
$fn$;
