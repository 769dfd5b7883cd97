-- Two holes of issue 11.
--
-- 1. Bad values no longer drop the deal. A stage that does not resolve
--    (after trimming and case-folding), a date outside date_min ..
--    date_max, point at the Unknown member (-1) and are listed as
--    data-quality issues; a close value above max_close_value is loaded as
--    is and listed. Only a value no column can hold (beyond numeric(18, 2),
--    infinite, NaN) is still quarantined. The settings and the issue table
--    say so.
UPDATE etl.config
SET
    description = 'Earliest date the calendar (dim_date) holds; an older date points at the Unknown date'
    || ' (-1) and is listed as a data-quality issue.'
WHERE key = 'date_min';
UPDATE etl.config
SET
    description = 'Latest date the calendar (dim_date) holds; a later date points at the Unknown date'
    || ' (-1) and is listed as a data-quality issue.'
WHERE key = 'date_max';
UPDATE etl.config
SET
    description = 'Largest plausible close value; a larger one is loaded as is (if numeric(18, 2) holds it)'
    || ' and listed as a data-quality issue.'
WHERE key = 'max_close_value';
COMMENT ON TABLE etl.data_quality_issue IS
'Source rows loaded despite a data-quality rule they break (close before engage, Won without value, negative '
'value, an unresolved stage or a date outside the calendar pointed at Unknown, a value above max_close_value), '
'one row per rule; record holds the row and, where useful, a detail naming the value.';

-- 2. A deal engaged in the future moves to a product version opened after
--    its fact was written, when that version's period covers its engage
--    date. The fact step finds such deals per version of the product and
--    range of engage dates: an index on (product_key, engage_date_key), so
--    the cost follows the deals that move (a new version starts at the
--    change's time: only deals engaged from then on fall in its period).
--    An initial load sets it aside and rebuilds it like the fact table's
--    other indexes (etl.suspend_ddl).
CREATE INDEX fact_sales_performance_product_engage_idx
ON dwh.fact_sales_performance (product_key, engage_date_key);
COMMENT ON INDEX dwh.fact_sales_performance_product_engage_idx IS
'The facts of one product version engaged in a range of days: the deals a new version of the product takes'
' over (dwh.insert_fact_batch).';
