-- Trigger function: dwh.keep_one_fact_per_opportunity() (statement level, on
--     INSERT and UPDATE of dwh.fact_sales_performance and of each of its
--     parts: PostgreSQL fires a statement trigger for the table a statement
--     names, so a write into a part directly is checked by the part's)
--     Keeps one fact per opportunity across the table's two parts. Each
--     part's primary key is opportunity_id (a key on the partitioned table
--     would have to hold is_cold, and PostgreSQL enforces a key within each
--     part only), so a deal's fact could be written into one part while the
--     other holds it. After each
--     statement, the rows it wrote (its transition table) are looked up in
--     the table by opportunity_id: one found in the other part is refused.
--     A fact moved from one part to the other (an UPDATE of is_cold) has
--     left its old part by then. Cost: one index probe per written row.
--     Two writers at once (the pipeline holds its lock, a DBA's session
--     does not) could each miss the other's uncommitted row: the check
--     first takes a transaction lock of its own, so a second writer's check
--     waits for the first to commit and then sees its rows.
--     The rows are looked up in the root of the partitioned table the
--     statement wrote (pg_partition_root): dwh.fact_sales_performance on one
--     server; on a Citus worker, where the trigger fires on the shards, the
--     shard of the table that holds this part's shard and its co-located
--     other part's (a deal's facts are on one node), a local lookup.
--     A bulk load into the empty table sets it aside with the keys
--     (etl.suspend_ddl) and proves the invariant in its validation.
-- Raises: 23505 naming the first keys.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION dwh.keep_one_fact_per_opportunity()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys text[];
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(1647469175, 2);
    EXECUTE format(
        'SELECT ARRAY(SELECT n.opportunity_id FROM written AS n
                       WHERE EXISTS (SELECT 1 FROM %s AS f
                                      WHERE f.opportunity_id = n.opportunity_id AND f.is_cold <> n.is_cold)
                       ORDER BY 1 LIMIT 10)',
        coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass)
       INTO v_keys;
    IF cardinality(v_keys) > 0 THEN
        RAISE EXCEPTION 'dwh.fact_sales_performance: opportunity_id % would have a fact in both parts',
            array_to_string(v_keys, ', ')
            USING ERRCODE = '23505',
                  DETAIL = 'One fact per opportunity: a deal''s fact is either hot or cold (is_cold).',
                  HINT = 'The pipeline writes facts where they are; facts move between the parts with '
                         'CALL etl.run_horizon_move();';
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.keep_one_fact_per_opportunity() IS
'Trigger function on INSERT and UPDATE of dwh.fact_sales_performance and its parts: refuses (23505) a '
'fact written into one part while the other holds the same opportunity.';

-- On the table and on each part, for inserts and for updates.
DO $triggers$
DECLARE
    v_table regclass;
    v_event text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['dwh.fact_sales_performance', 'dwh.fact_sales_performance_hot',
                                   'dwh.fact_sales_performance_cold']::regclass [] LOOP
        FOREACH v_event IN ARRAY ARRAY['insert', 'update'] LOOP
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING NEW TABLE AS written '
                           'FOR EACH STATEMENT EXECUTE FUNCTION dwh.keep_one_fact_per_opportunity()',
                           'one_fact_per_opportunity_' || v_event, upper(v_event), v_table);
        END LOOP;
    END LOOP;
END
$triggers$;
