-- Issue 11: the facts a new product version takes over are found through
-- the fact table's existing indexes (dwh.facts_off_their_version): the
-- live open deals by fact_sales_performance_open_idx, the closed or deleted
-- ones by their close date. The index on (product_key, engage_date_key)
-- that found them before was maintained on every fact written and cost
-- the incremental update about a quarter of its time (docs/benchmarks.md).
-- What neither index reaches is the closed or deleted deals whose close
-- date key lies before the engage date: unknown (-1; a deleted open deal)
-- or inverted dates. They are few; a partial index keeps them, and an
-- initial load sets it aside and rebuilds it like the other indexes.
DROP INDEX dwh.fact_sales_performance_product_engage_idx;
CREATE INDEX fact_sales_performance_close_before_engage_idx
ON dwh.fact_sales_performance (engage_date_key)
WHERE (is_closed OR is_deleted) AND close_date_key < engage_date_key;
COMMENT ON INDEX dwh.fact_sales_performance_close_before_engage_idx IS
'Closed or deleted deals whose close date key is before the engage date (unknown close: -1): the ones '
'that neither the open-deals nor the close-date index finds by engage date (dwh.facts_off_their_version).';
