-- Issue 13: the tables every incremental run updates are vacuumed after a
-- fixed number of changed rows, whatever their size.
--
-- Autovacuum's default waits for 20% of a table to change: at scale 1000,
-- 1.8 million facts, some 300 runs of 10,000 changes. Until then every
-- update leaves a dead row version in the heap and six indexes, and each
-- page a run touches stops being all-visible, so the validation's recounts,
-- which read the touched groups through the facts' indexes, fetch heap pages
-- instead of answering from the index alone. Measured on the scale-1000
-- bench warehouse, 10,000 changes a run (docs/benchmarks.md): 8.0-8.2 s a
-- run with 158,500 dead facts, 5.6-5.7 s after a VACUUM (validation 2.7 ->
-- 0.9 s, the fact step 2.3-2.5 -> 1.5 s). 20,000 changed rows is every two
-- or three such runs; autovacuum does it in the background, throttled, and
-- skips the index pass while few pages hold dead rows.
ALTER TABLE dwh.fact_sales_performance SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000
);
ALTER TABLE dwh.fact_deal_history SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000
);
