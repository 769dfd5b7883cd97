-- View: dwh.product_version_lookup
--     Which product version a deal resolves to, as contiguous periods: a
--     version covers from its valid_from (-infinity for a product's first
--     version, so earlier dates take the first version) up to the next
--     version's valid_from (infinity for the latest). is_latest marks the
--     version taken by a deal without an engage date.
--     A deal engaged on day D takes the version in effect at D 00:00 UTC,
--     so the periods are also given as dates (first_day .. before_day), the
--     cheap comparison for millions of deals: D 00:00 lies in [from, to)
--     exactly when D lies in [first day starting at or after from, first
--     day starting at or after to).
CREATE OR REPLACE VIEW dwh.product_version_lookup AS
WITH periods AS (
    SELECT
        p.product_key,
        p.product_id,
        p.sales_price,
        coalesce(lead(p.valid_from) OVER w, 'infinity'::timestamptz) AS lookup_to,
        lead(p.valid_from) OVER w IS NULL AS is_latest,
        CASE
            WHEN lag(p.valid_from) OVER w IS NULL THEN '-infinity'::timestamptz ELSE p.valid_from
        END AS lookup_from
    FROM dwh.dim_product AS p
    WHERE p.product_key <> -1
    WINDOW w AS (PARTITION BY p.product_id ORDER BY p.valid_from)
)

SELECT
    periods.product_key,
    periods.product_id,
    periods.sales_price,
    periods.lookup_from,
    periods.lookup_to,
    periods.is_latest,
    -- the first day starting at or after the timestamp (UTC)
    ((periods.lookup_from AT TIME ZONE 'UTC') + interval '1 day' - interval '1 microsecond')::date
        AS lookup_first_day,
    ((periods.lookup_to AT TIME ZONE 'UTC') + interval '1 day' - interval '1 microsecond')::date
        AS lookup_before_day
FROM periods;

COMMENT ON VIEW dwh.product_version_lookup IS
'One row per product version with the period of engage dates that resolve to it (first version from '
'-infinity, latest to infinity; as dates: lookup_first_day <= engage_date < lookup_before_day); '
'is_latest: the version for deals without an engage date.';

COMMENT ON COLUMN dwh.product_version_lookup.product_key IS
'Surrogate key of the product version (dwh.dim_product); the Unknown product (-1) is not listed.';
COMMENT ON COLUMN dwh.product_version_lookup.product_id IS 'Business key of the product, shared by all its versions.';
COMMENT ON COLUMN dwh.product_version_lookup.sales_price IS 'The list price in effect during this version.';
COMMENT ON COLUMN dwh.product_version_lookup.lookup_from IS
'Start of the version''s period, inclusive: its valid_from; -infinity for the product''s first version.';
COMMENT ON COLUMN dwh.product_version_lookup.lookup_to IS
'End of the version''s period, exclusive: the next version''s valid_from; infinity for the latest version.';
COMMENT ON COLUMN dwh.product_version_lookup.is_latest IS
'The product''s latest version: the one a deal without an engage date resolves to.';
COMMENT ON COLUMN dwh.product_version_lookup.lookup_first_day IS
'First engage date that resolves to this version: the first day starting (UTC) at or after lookup_from; -infinity'
' for the first version.';
COMMENT ON COLUMN dwh.product_version_lookup.lookup_before_day IS
'First engage date after the period (exclusive bound): the first day starting (UTC) at or after lookup_to; '
'infinity for the latest version.';
