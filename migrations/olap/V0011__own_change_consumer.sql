-- Each warehouse is its own change consumer (CONTRACT: named after its
-- database unless configured), and it reads how far the source has purged
-- its change log, so that a window the log no longer covers is refused.

CREATE FOREIGN TABLE src.purge_horizon (
    horizon xid8,
    purged_at timestamptz
) SERVER b2b_sales_source OPTIONS (schema_name 'cdc', table_name 'purge_horizon');
COMMENT ON FOREIGN TABLE src.purge_horizon IS
'How far the source purged its change log (cdc.purge_horizon): a window starting below horizon is refused.';

-- The seeded name was the same for every warehouse ('b2b_sales_olap'): two
-- warehouses on one source shared one position, and the faster one let the
-- source purge what the slower had not applied. Empty now means the
-- database's own name (etl.consumer_name()); a name set on purpose stays.
-- A warehouse whose database is called b2b_sales_olap keeps its row; any
-- other one that reported under the old name reports under its own from its
-- next run on, and the old row stops holding the purge back once it is older
-- than its retention (cdc.purge_consumed).
UPDATE etl.config SET
    value = CASE WHEN value = 'b2b_sales_olap' THEN '' ELSE value END,
    description = 'The name this warehouse reports its position under in the source''s cdc.consumer; '
    || 'empty: the database''s name (each warehouse its own consumer).'
WHERE key = 'consumer_name';

UPDATE etl.config SET
    description = 'How long the source keeps changes after the warehouse applied them, and how long '
    || 'after its last report this warehouse still holds back the purge of changes it has not applied.'
WHERE key = 'change_retention';
