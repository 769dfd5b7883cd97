-- Function: dwh.apply_product_versions(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_product (SCD type 2 on series and sales_price;
--     type 1 on the name, written into the current version).
--     Initial load: one version per staged product, valid from -infinity
--     (the earliest state the warehouse knows).
--     Incremental update: every committed transaction of the window that
--     changed a product is one event (its last image in that transaction,
--     at its last changed_at; several updates in one transaction collapse).
--     Per product, in changed_at order (commit order: writers of one row
--     wait for each other), an event opens a version when the product was
--     absent or deleted before it or a tracked attribute differs; a delete
--     closes the version in effect and marks it deleted. Each version is
--     valid from its event's changed_at to the next such event.
-- Returns: NULL (done).
-- Tables: reads etl.stage_products, etl.change_window, etl.run; writes
--     dwh.dim_product.
CREATE OR REPLACE FUNCTION dwh.apply_product_versions(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_in bigint;
    v_closed bigint := 0;
    v_inserted bigint := 0;
    v_renamed bigint := 0;
BEGIN
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;

    IF v_run.pipeline = 'initial_load' THEN
        INSERT INTO dwh.dim_product (product_id, product_name, series, sales_price, valid_from, run_id)
        SELECT s.product_id, s.product_name, s.series, s.sales_price, '-infinity', v_run.run_id
          FROM etl.stage_products AS s
         WHERE NOT EXISTS (SELECT FROM dwh.dim_product AS d WHERE d.product_id = s.product_id)
         ORDER BY s.product_id;
        GET DIAGNOSTICS v_inserted = ROW_COUNT;
        SELECT count(*) INTO v_in FROM etl.stage_products;
        PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted);
        RETURN NULL;
    END IF;

    -- One event per (product, transaction), with the state before it.
    IF to_regclass('pg_temp.product_event') IS NOT NULL THEN
        DROP TABLE pg_temp.product_event;
    END IF;
    CREATE TEMPORARY TABLE product_event ON COMMIT DROP AS
    WITH event AS (
        SELECT DISTINCT ON (w.row_key, w.txid)
               w.row_key::integer AS product_id, w.operation = 'D' AS is_delete,
               w.row_data ->> 'product_name' AS product_name, w.row_data ->> 'series' AS series,
               (w.row_data ->> 'sales_price')::numeric AS sales_price,
               max(w.changed_at) OVER (PARTITION BY w.row_key, w.txid) AS changed_at
          FROM etl.change_window AS w
         WHERE w.table_name = 'products'
         ORDER BY w.row_key, w.txid, w.change_id DESC
    ),
    ordered AS (
        SELECT e.*,
               row_number() OVER w AS n,
               lag(NOT e.is_delete) OVER w AS live_before,
               lag(e.series) OVER w AS series_before,
               lag(e.sales_price) OVER w AS price_before
          FROM event AS e
        WINDOW w AS (PARTITION BY e.product_id ORDER BY e.changed_at)
    )
    SELECT o.product_id, o.is_delete, o.product_name, o.series, o.sales_price, o.changed_at,
           -- before the first event, the state is the current version's
           CASE WHEN o.n = 1 THEN c.product_key IS NOT NULL ELSE o.live_before END AS live_before,
           CASE WHEN o.n = 1 THEN c.series ELSE o.series_before END AS series_before,
           CASE WHEN o.n = 1 THEN c.sales_price ELSE o.price_before END AS price_before
      FROM ordered AS o
      LEFT JOIN dwh.dim_product AS c ON c.product_id = o.product_id AND c.is_current;

    -- Keep the events that start or end a version.
    DELETE FROM product_event AS e
     WHERE NOT (CASE WHEN e.is_delete THEN e.live_before
                     ELSE NOT e.live_before
                          OR (e.series, e.sales_price) IS DISTINCT FROM (e.series_before, e.price_before)
                END);

    -- Close the current versions at their product's first boundary.
    UPDATE dwh.dim_product AS d
       SET valid_to = b.changed_at, is_current = false, run_id = v_run.run_id,
           updated_at = clock_timestamp(),
           is_deleted = b.is_delete
      FROM (SELECT DISTINCT ON (e.product_id) e.product_id, e.changed_at, e.is_delete
              FROM product_event AS e ORDER BY e.product_id, e.changed_at) AS b
     WHERE d.product_id = b.product_id AND d.is_current;
    GET DIAGNOSTICS v_closed = ROW_COUNT;

    -- Open a version at each event that is not a delete, up to the next boundary.
    INSERT INTO dwh.dim_product (
        product_id, product_name, series, sales_price, valid_from, valid_to, is_current,
        is_deleted, run_id
    )
    SELECT v.product_id, v.product_name, v.series, v.sales_price, v.changed_at,
           coalesce(v.next_at, 'infinity'), v.next_at IS NULL, coalesce(v.next_is_delete, false),
           v_run.run_id
      FROM (SELECT e.*,
                   lead(e.changed_at) OVER w AS next_at,
                   lead(e.is_delete) OVER w AS next_is_delete
              FROM product_event AS e
            WINDOW w AS (PARTITION BY e.product_id ORDER BY e.changed_at)) AS v
     WHERE NOT v.is_delete
     ORDER BY v.product_id, v.changed_at;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    -- Type 1: the name as the window left it, in the current version.
    UPDATE dwh.dim_product AS d
       SET product_name = s.product_name, run_id = v_run.run_id, updated_at = clock_timestamp()
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
