-- View: dwh.product_version_lookup
--     Which product version a deal resolves to, as contiguous periods: a
--     version covers from its valid_from (-infinity for a product's first
--     version, so earlier dates take the first version) up to the next
--     version's valid_from (infinity for the latest). is_latest marks the
--     version taken by a deal without an engage date.
CREATE OR REPLACE VIEW dwh.product_version_lookup AS
SELECT
    p.product_key,
    p.product_id,
    p.sales_price,
    CASE WHEN lag(p.valid_from) OVER w IS NULL THEN '-infinity'::timestamptz ELSE p.valid_from END
        AS lookup_from,
    coalesce(lead(p.valid_from) OVER w, 'infinity'::timestamptz) AS lookup_to,
    lead(p.valid_from) OVER w IS NULL AS is_latest
FROM dwh.dim_product AS p
WHERE p.product_key <> -1
WINDOW w AS (PARTITION BY p.product_id ORDER BY p.valid_from);

COMMENT ON VIEW dwh.product_version_lookup IS
'One row per product version with the period of engage dates that resolve to it (first version from '
'-infinity, latest to infinity); is_latest: the version for deals without an engage date.';
