-- Function: dwh.product_version_key(p_product_id integer, p_engage_date date) RETURNS integer
--     The product version a deal engaged on p_engage_date resolves to, by
--     the rule of dwh.product_version_lookup: the latest version in effect
--     at the start of that day (valid_from at or before its 00:00 UTC); a
--     date before the product's first version gets the first; a NULL date
--     (none, or outside the calendar: the caller decides) the latest. NULL
--     when the product has no version (the caller's Unknown, -1).
--     Two probes of dim_product's (product_id, valid_from) index, whatever
--     the number of versions: the view, joined on product_id and filtered
--     by date range, compares each deal with every version of its product,
--     and the history step grew with every price change (at scale 1000,
--     364 versions a product: 557 ms of the step, now 202 ms:
--     docs/benchmarks.md). The caller resolves each distinct (product,
--     date) of its window once. The fact step keeps the view's hash join:
--     it also loads the initial load's millions of deals, when every
--     product has one version, and there the join costs a quarter of
--     resolving distinct pairs (90 against 270-375 ms for 200,000 deals).
-- Parameters:
--     p_product_id  - the source's product_id
--     p_engage_date - the deal's engage date within the calendar, else NULL
-- Tables: reads dwh.dim_product.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Internal: called by dwh.apply_deal_history.
CREATE OR REPLACE FUNCTION dwh.product_version_key(p_product_id integer, p_engage_date date)
RETURNS integer
LANGUAGE sql
STABLE
PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(
        (SELECT v.product_key FROM dwh.dim_product AS v
          WHERE v.product_id = p_product_id
            AND v.valid_from <= coalesce(p_engage_date::timestamp AT TIME ZONE 'UTC', 'infinity')
          ORDER BY v.valid_from DESC LIMIT 1),
        (SELECT v.product_key FROM dwh.dim_product AS v
          WHERE v.product_id = p_product_id
          ORDER BY v.valid_from LIMIT 1)
    );
$fn$;

COMMENT ON FUNCTION dwh.product_version_key(integer, date) IS
'The product version (product_key) a deal engaged on a date resolves to (NULL date: the latest), by two index '
'probes; NULL for a product without versions.';
