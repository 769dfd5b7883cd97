-- Function: dwh.apply_product_versions(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_product (SCD type 2 on series and sales_price;
--     type 1 on the name, written into the current version).
--     Initial load: one version per staged product, valid from -infinity
--     (the earliest state the warehouse knows).
--     Incremental update: every committed transaction of the window that
--     changed a product is one event at its last changed_at (several updates
--     in one transaction collapse). Whether the product exists after it
--     follows from the transaction's moves in (I) and out (D), counted, not
--     from the order of its log rows (writable CTEs log out of order); its
--     values are its last image. After the window's last event the product
--     is exactly as the window's snapshot (etl.stage_products) has it.
--     Per product, in changed_at order (commit order: writers of one row
--     wait for each other), an event opens a version when the product was
--     absent or deleted before it or a tracked attribute differs; a delete
--     closes the version in effect and marks it deleted. Each version is
--     valid from its event's changed_at to the next such event.
--     Safe to apply the same window again (a run that died before marking
--     it applied is followed by one that pulls it again, maybe with more):
--     the state before a product's first event is the version in effect
--     when the window began, and versions are written over their own
--     earlier copies, matched by product and valid_from.
-- Returns: NULL (done).
-- Tables: reads etl.stage_products, etl.change_window, etl.run; writes
--     dwh.dim_product.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.apply_product_versions(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- When the rows are written: a value, since Citus evaluates no volatile
    -- function in a write to a reference table.
    v_written_at timestamptz;
    v_run etl.run;
    v_in bigint;
    v_closed bigint := 0;
    v_inserted bigint := 0;
    v_renamed bigint := 0;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.apply_product_versions');
    v_written_at := clock_timestamp();
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;

    IF v_run.pipeline = 'initial_load' THEN
        INSERT INTO dwh.dim_product (product_id, product_name, series, sales_price, valid_from, run_id)
        SELECT s.product_id, s.product_name, s.series, s.sales_price, '-infinity', v_run.run_id
          FROM etl.stage_products AS s
          LEFT JOIN dwh.dim_product AS d ON d.product_id = s.product_id
         WHERE d.product_id IS NULL
         ORDER BY s.product_id;
        GET DIAGNOSTICS v_inserted = ROW_COUNT;
        SELECT count(*) INTO v_in FROM etl.stage_products;
        PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted);
        RETURN NULL;
    END IF;

    -- One event per (product, transaction), with the state before it. Before
    -- the product's first event, the state is the version in effect when the
    -- window began (not the current one: the window may be applied again).
    IF to_regclass('pg_temp.product_event') IS NOT NULL THEN
        DROP TABLE pg_temp.product_event;
    END IF;
    CREATE TEMPORARY TABLE product_event ON COMMIT DROP AS
    WITH tx AS (
        -- The log's order inside a transaction is not the order of effect (the
        -- statement triggers of a writable CTE fire in any order), so an event
        -- is not "its last log row": its moves in (I) and out (D) are counted,
        -- and its image is its last I or U (one query leaves at most one image
        -- of a key, and queries log in order).
        SELECT w.row_key::integer AS product_id,
               count(*) FILTER (WHERE w.operation = 'I')
                   - count(*) FILTER (WHERE w.operation = 'D') AS presence_delta,
               (array_agg(w.row_data ORDER BY w.change_id DESC) FILTER (WHERE w.operation <> 'D'))[1]
                   AS image,
               max(w.changed_at) AS changed_at
          FROM etl.change_window AS w
         WHERE w.table_name = 'products'
         GROUP BY w.row_key, w.txid
    ),
    chained AS (
        SELECT t.*,
               row_number() OVER w AS n,
               count(*) OVER (PARTITION BY t.product_id) AS events,
               min(t.changed_at) OVER (PARTITION BY t.product_id) AS window_start,
               array_agg(t.presence_delta) FILTER (WHERE t.presence_delta <> 0) OVER w AS moves
          FROM tx AS t
        WINDOW w AS (PARTITION BY t.product_id ORDER BY t.changed_at ROWS UNBOUNDED PRECEDING)
    ),
    event AS (
        -- Present after a transaction: after the window's last one, exactly when
        -- the window's snapshot holds the product (with its values); after an
        -- earlier one, as its last move in or out left it, or as it was when the
        -- window began.
        SELECT c.product_id, c.changed_at, c.n,
               b.product_key AS version_before_window, b.series AS version_series,
               b.sales_price AS version_price,
               coalesce(b.valid_to >= c.window_start, false) AS live_into_window,
               NOT CASE WHEN c.n = c.events THEN s.product_id IS NOT NULL
                        WHEN c.moves IS NOT NULL THEN c.moves[array_upper(c.moves, 1)] > 0
                        ELSE coalesce(b.valid_to >= c.window_start, false)
                   END AS is_delete,
               CASE WHEN c.n = c.events THEN s.product_name ELSE c.image ->> 'product_name' END
                   AS product_name,
               CASE WHEN c.n = c.events THEN s.series ELSE c.image ->> 'series' END AS series,
               CASE WHEN c.n = c.events THEN s.sales_price ELSE (c.image ->> 'sales_price')::numeric END
                   AS sales_price
          FROM chained AS c
          LEFT JOIN etl.stage_products AS s ON s.product_id = c.product_id
          LEFT JOIN LATERAL (
              SELECT d.* FROM dwh.dim_product AS d
               WHERE d.product_id = c.product_id AND d.valid_from < c.window_start
               ORDER BY d.valid_from DESC LIMIT 1
          ) AS b ON true
    )
    SELECT e.product_id, e.is_delete, e.product_name, e.series, e.sales_price, e.changed_at,
           e.version_before_window, e.live_into_window,
           CASE WHEN e.n = 1 THEN e.live_into_window ELSE lag(NOT e.is_delete) OVER w END AS live_before,
           CASE WHEN e.n = 1 THEN e.version_series ELSE lag(e.series) OVER w END AS series_before,
           CASE WHEN e.n = 1 THEN e.version_price ELSE lag(e.sales_price) OVER w END AS price_before
      FROM event AS e
    WINDOW w AS (PARTITION BY e.product_id ORDER BY e.changed_at);

    -- Keep the events that start or end a version.
    DELETE FROM product_event AS e
     WHERE NOT (CASE WHEN e.is_delete THEN e.live_before
                     ELSE NOT e.live_before
                          OR (e.series, e.sales_price) IS DISTINCT FROM (e.series_before, e.price_before)
                END);

    -- The version in effect when the window began ends at the first boundary.
    UPDATE dwh.dim_product AS d
       SET valid_to = f.changed_at, is_current = false, is_deleted = f.is_delete,
           run_id = v_run.run_id, updated_at = v_written_at
      FROM (SELECT DISTINCT ON (e.product_id) e.*
              FROM product_event AS e ORDER BY e.product_id, e.changed_at) AS f
     WHERE d.product_key = f.version_before_window AND f.live_into_window;
    GET DIAGNOSTICS v_closed = ROW_COUNT;

    -- Each event that is not a delete is a version up to the next boundary:
    -- written over the same version of an earlier attempt, inserted otherwise.
    CREATE TEMPORARY TABLE product_version ON COMMIT DROP AS
    SELECT v.product_id, v.product_name, v.series, v.sales_price, v.changed_at AS valid_from,
           coalesce(v.next_at, 'infinity') AS valid_to, v.next_at IS NULL AS is_current,
           coalesce(v.next_is_delete, false) AS is_deleted
      FROM (SELECT e.*,
                   lead(e.changed_at) OVER w AS next_at,
                   lead(e.is_delete) OVER w AS next_is_delete
              FROM product_event AS e
            WINDOW w AS (PARTITION BY e.product_id ORDER BY e.changed_at)) AS v
     WHERE NOT v.is_delete;
    -- (A temporary table meets the dimension through a materialised CTE: on
    -- Citus the dimension is a reference table, which a write joins with no
    -- local table.)
    WITH v AS MATERIALIZED (SELECT * FROM product_version)
    UPDATE dwh.dim_product AS d
       SET product_name = v.product_name, series = v.series, sales_price = v.sales_price,
           valid_to = v.valid_to, is_current = v.is_current, is_deleted = v.is_deleted,
           run_id = v_run.run_id, updated_at = v_written_at
      FROM v
     WHERE d.product_id = v.product_id AND d.valid_from = v.valid_from;
    WITH v AS MATERIALIZED (SELECT * FROM product_version)
    INSERT INTO dwh.dim_product (
        product_id, product_name, series, sales_price, valid_from, valid_to, is_current,
        is_deleted, run_id
    )
    SELECT v.product_id, v.product_name, v.series, v.sales_price, v.valid_from, v.valid_to,
           v.is_current, v.is_deleted, v_run.run_id
      FROM v
      LEFT JOIN dwh.dim_product AS d ON d.product_id = v.product_id AND d.valid_from = v.valid_from
     WHERE d.product_id IS NULL
     ORDER BY v.product_id, v.valid_from;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    DROP TABLE product_version;

    -- Type 1: the name as the window left it, in the current version.
    UPDATE dwh.dim_product AS d
       SET product_name = s.product_name, run_id = v_run.run_id, updated_at = v_written_at
      FROM etl.stage_products AS s
     WHERE d.product_id = s.product_id AND d.is_current
       AND d.product_name IS DISTINCT FROM s.product_name;
    GET DIAGNOSTICS v_renamed = ROW_COUNT;

    SELECT count(*) INTO v_in FROM etl.change_window AS w WHERE w.table_name = 'products';
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_closed + v_renamed);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.apply_product_versions(bigint) IS
'Unit of dwh.load_dim_product: applies staged products as SCD type 2 versions of dwh.dim_product, one'
' per committed transaction that changed series or price, valid from its changed_at.';
