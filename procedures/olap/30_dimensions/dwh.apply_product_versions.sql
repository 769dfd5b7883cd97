-- Function: dwh.apply_product_versions(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_dim_product (SCD type 2 on series and sales_price).
--     For each staged product: a new product, or one whose current version
--     differs in a tracked attribute, or one that has no current version
--     (deleted, now back) gets a new version; a changed current version is
--     closed where the new one starts. A name change alone is written into
--     the current version (type 1). Versions from the initial load start at
--     -infinity: the earliest state the warehouse knows; otherwise they
--     start at the run's source snapshot time.
-- Returns: NULL (done).
-- Tables: reads etl.stage_products, etl.run; writes dwh.dim_product.
CREATE OR REPLACE FUNCTION dwh.apply_product_versions(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_valid_from timestamptz;
    v_in bigint;
    v_closed bigint;
    v_inserted bigint;
    v_renamed bigint;
BEGIN
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    v_valid_from := CASE WHEN v_run.pipeline = 'initial_load' THEN '-infinity'
                         ELSE v_run.source_snapshot_at END;

    UPDATE dwh.dim_product AS d
       SET valid_to = v_valid_from, is_current = false, run_id = v_run.run_id,
           updated_at = clock_timestamp()
      FROM etl.stage_products AS s
     WHERE d.product_id = s.product_id AND d.is_current
       AND (d.series, d.sales_price) IS DISTINCT FROM (s.series, s.sales_price);
    GET DIAGNOSTICS v_closed = ROW_COUNT;

    INSERT INTO dwh.dim_product (
        product_id, product_name, series, sales_price, valid_from, run_id
    )
    SELECT s.product_id, s.product_name, s.series, s.sales_price, v_valid_from, v_run.run_id
      FROM etl.stage_products AS s
     WHERE NOT EXISTS (
               SELECT FROM dwh.dim_product AS d WHERE d.product_id = s.product_id AND d.is_current
           )
     ORDER BY s.product_id;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    UPDATE dwh.dim_product AS d
       SET product_name = s.product_name, run_id = v_run.run_id, updated_at = clock_timestamp()
      FROM etl.stage_products AS s
     WHERE d.product_id = s.product_id AND d.is_current AND d.product_name IS DISTINCT FROM s.product_name;
    GET DIAGNOSTICS v_renamed = ROW_COUNT;

    SELECT count(*) INTO v_in FROM etl.stage_products;
    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_closed + v_renamed);
    RETURN NULL;
END
$fn$;
