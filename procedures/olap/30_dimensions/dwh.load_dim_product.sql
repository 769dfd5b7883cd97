-- Procedure: dwh.load_dim_product(p_run_id bigint)
--     Loads the staged products into dwh.dim_product as SCD type 2 versions
--     (unit: dwh.apply_product_versions).
-- Parameters:
--     p_run_id - the run; NULL means the run in progress
-- Tables: reads etl.stage_products; writes dwh.dim_product.
-- Commits: once. Safe to re-run: yes.
CREATE OR REPLACE PROCEDURE dwh.load_dim_product(p_run_id bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL etl.run_step(p_run_id, 'dwh.load_dim_product', 'dwh.dim_product', 'dwh.apply_product_versions');
END
$proc$;

COMMENT ON PROCEDURE dwh.load_dim_product(bigint) IS  -- noqa: LT01
'Step: loads the staged products into dwh.dim_product as SCD type 2 versions (unit '
'dwh.apply_product_versions); commits once, safe to re-run.';
