-- Procedure: public.archive_closed_deals(p_closed_before date, p_batch_rows integer,
--                                        INOUT archived bigint)
--     The CRM's archiving routine, run by a DBA: moves the closed deals (Won
--     or Lost, read as the warehouse reads a stage: case, spaces and
--     punctuation aside) whose close date is before p_closed_before out of
--     public.sales_pipeline into public.sales_pipeline_archive, as they are,
--     stamped with the batch's archived_at. The deals to move are found by
--     one scan of sales_pipeline (into a temporary list of keys: walking the
--     primary key instead fetched every row of the table in key order, 44 s
--     for 150,000 deals among 8.8 million), then moved in batches of
--     p_batch_rows in key order, each by one statement (a delete and the
--     archive's insert: captured together, in one transaction) that checks
--     each deal again, and committed, so a long run holds no lock for long
--     and keeps what it did if it is stopped. Resumable: a batch that was
--     killed is rolled back whole, and calling again moves what is left.
--     Deals the CRM holds locked at that moment, or changed since the scan,
--     are skipped (SKIP LOCKED): the last notice counts them, and a later
--     call takes them.
--     A key is in one of the two tables at most (sales_pipeline refuses a
--     new deal with an archived key: cdc.refuse_archived_key); should both
--     hold one anyway, the deal being archived replaces the older copy.
--     A warehouse keeps every archived deal live, marked archived (a DELETE
--     stays a delete: the deal is in neither table).
-- Parameters:
--     p_closed_before - deals that closed before this day go (required)
--     p_batch_rows    - deals a batch moves (default 10,000; above 0)
--     archived        - out: the deals moved by this call
-- Raises: 22004 for a NULL cut-off, 22023 for a batch size under 1;
--     PostgreSQL's 2D000 (invalid transaction termination) inside a
--     transaction block, before anything is moved.
-- Tables: reads and deletes from public.sales_pipeline; inserts into (or
--     updates) public.sales_pipeline_archive (both captured in cdc.change_log);
--     its list of candidates in a temporary table, pg_temp.archive_candidate.
-- Commits: per batch (call it outside a transaction block). No SET clause:
--     PostgreSQL allows COMMIT only in a procedure without one, so every name
--     is schema-qualified instead. Runs with the caller's rights (a
--     superuser's, or a role with DELETE on sales_pipeline and INSERT and
--     UPDATE on the archive); b2b_app may not call it.
CREATE OR REPLACE PROCEDURE public.archive_closed_deals(
    p_closed_before date,
    p_batch_rows integer DEFAULT 10000,
    INOUT archived bigint DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_after text := '';
    v_last text;
    v_batch bigint;
    v_moved bigint;
    v_at timestamptz;
    v_skipped bigint := 0;
BEGIN
    IF p_closed_before IS NULL THEN
        RAISE EXCEPTION 'public.archive_closed_deals: the cut-off date is NULL'
            USING ERRCODE = '22004', HINT = 'CALL public.archive_closed_deals(''2017-07-01'');';
    END IF;
    IF p_batch_rows IS NULL OR p_batch_rows < 1 THEN
        RAISE EXCEPTION 'public.archive_closed_deals: a batch must move at least one deal, not %',
            coalesce(p_batch_rows::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Leave it out for batches of 10,000.';
    END IF;
    -- Inside a transaction block (BEGIN ... CALL, several statements sent as
    -- one, a driver's implicit BEGIN) PostgreSQL refuses a procedure's
    -- COMMIT ("invalid transaction termination"): here, before anything is
    -- moved or announced, not after a first batch. (A procedure cannot tell
    -- that it is in one before it tries: neither now() nor the catch of an
    -- exception block can.)
    COMMIT;
    archived := 0;
    -- The candidates, by one scan (kept across the batches' commits).
    IF pg_catalog.to_regclass('pg_temp.archive_candidate') IS NOT NULL THEN
        DROP TABLE pg_temp.archive_candidate;
    END IF;
    CREATE TEMPORARY TABLE archive_candidate (opportunity_id text PRIMARY KEY) ON COMMIT PRESERVE ROWS;
    INSERT INTO pg_temp.archive_candidate
    SELECT p.opportunity_id
      FROM public.sales_pipeline AS p
     WHERE p.close_date OPERATOR(pg_catalog.<) p_closed_before
       AND pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.normalize(p.deal_stage, 'NFKC')),
                                     '[^[:alnum:]]+', '', 'g') IN ('won', 'lost');
    ANALYZE pg_temp.archive_candidate;
    COMMIT;
    LOOP
        v_at := pg_catalog.clock_timestamp();
        SELECT pg_catalog.count(*), pg_catalog.max(b.opportunity_id) INTO v_batch, v_last
          FROM (SELECT c.opportunity_id FROM pg_temp.archive_candidate AS c
                 WHERE c.opportunity_id OPERATOR(pg_catalog.>) v_after
                 ORDER BY c.opportunity_id LIMIT p_batch_rows) AS b;
        EXIT WHEN v_batch = 0;
        -- The batch's deals still closed before the cut-off and not locked,
        -- moved in one statement: its delete and insert are captured in this
        -- transaction.
        WITH batch AS (
            SELECT p.opportunity_id
              FROM public.sales_pipeline AS p
             WHERE p.opportunity_id IN (SELECT c.opportunity_id FROM pg_temp.archive_candidate AS c
                                         WHERE c.opportunity_id OPERATOR(pg_catalog.>) v_after
                                           AND c.opportunity_id OPERATOR(pg_catalog.<=) v_last)
               AND p.close_date OPERATOR(pg_catalog.<) p_closed_before
               AND pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.normalize(p.deal_stage, 'NFKC')),
                                             '[^[:alnum:]]+', '', 'g') IN ('won', 'lost')
               FOR UPDATE OF p SKIP LOCKED
        ),
        moved AS (
            DELETE FROM public.sales_pipeline AS p
             USING batch AS b
             WHERE p.opportunity_id OPERATOR(pg_catalog.=) b.opportunity_id
            RETURNING p.*
        ),
        kept AS (
            INSERT INTO public.sales_pipeline_archive AS a (
                opportunity_id, sales_agent_id, product_id, account_id, deal_stage, engage_date,
                close_date, close_value, archived_at
            )
            SELECT m.opportunity_id, m.sales_agent_id, m.product_id, m.account_id, m.deal_stage,
                   m.engage_date, m.close_date, m.close_value, v_at
              FROM moved AS m
            ON CONFLICT (opportunity_id) DO UPDATE
               SET sales_agent_id = excluded.sales_agent_id, product_id = excluded.product_id,
                   account_id = excluded.account_id, deal_stage = excluded.deal_stage,
                   engage_date = excluded.engage_date, close_date = excluded.close_date,
                   close_value = excluded.close_value, archived_at = excluded.archived_at
            RETURNING a.opportunity_id
        )
        SELECT pg_catalog.count(*) INTO v_moved FROM kept AS k;
        archived := archived + v_moved;
        v_skipped := v_skipped + v_batch - v_moved;
        v_after := v_last;
        IF v_moved > 0 THEN
            RAISE NOTICE 'archived % deals closed before % (% in this call)', v_moved, p_closed_before, archived;
        END IF;
        COMMIT;
    END LOOP;
    DROP TABLE pg_temp.archive_candidate;
    IF v_skipped > 0 THEN
        RAISE NOTICE '% deals closed before % were left in sales_pipeline (locked or changed by the CRM meanwhile): call again later to move them',
            v_skipped, p_closed_before;
    END IF;
END
$proc$;

COMMENT ON PROCEDURE public.archive_closed_deals(date, integer, bigint) IS  -- noqa: LT01
'The CRM''s archiving routine (DBA): moves closed deals (Won, Lost) that closed before a day from '
'sales_pipeline into sales_pipeline_archive in committed batches; resumable; the warehouse keeps them live, '
'marked archived.';
