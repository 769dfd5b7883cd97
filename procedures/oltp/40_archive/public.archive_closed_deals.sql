-- Procedure: public.archive_closed_deals(p_closed_before date, p_batch_rows integer,
--                                        INOUT archived bigint)
--     The CRM's archiving routine, run by a DBA: moves the closed deals (Won
--     or Lost, read as the warehouse reads a stage: case, spaces and
--     punctuation aside) whose close date is before p_closed_before out of
--     public.sales_pipeline into public.sales_pipeline_archive, as they are,
--     stamped with the batch's archived_at. In batches of p_batch_rows deals
--     in key order, each moved by one statement (a delete and the archive's
--     insert: captured together, in one transaction) and committed, so a
--     long run holds no lock for long and keeps what it did if it is stopped.
--     Resumable: a batch that was killed is rolled back whole, and calling
--     again moves what is left. Deals the CRM holds locked at that moment
--     are skipped (SKIP LOCKED): a later call takes them; the last notice
--     says how many closed deals before the cut-off are left.
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
--     updates) public.sales_pipeline_archive (both captured in cdc.change_log).
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
    v_moved bigint;
    v_at timestamptz;
    v_left bigint;
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
    LOOP
        v_at := pg_catalog.clock_timestamp();
        -- The next batch after the last key moved (the primary key's order:
        -- one pass over the table however many batches), moved in one
        -- statement: its delete and insert are captured in this transaction.
        WITH batch AS (
            SELECT p.opportunity_id
              FROM public.sales_pipeline AS p
             WHERE p.opportunity_id OPERATOR(pg_catalog.>) v_after
               AND pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.normalize(p.deal_stage, 'NFKC')),
                                             '[^[:alnum:]]+', '', 'g') IN ('won', 'lost')
               AND p.close_date OPERATOR(pg_catalog.<) p_closed_before
             ORDER BY p.opportunity_id
             LIMIT p_batch_rows
             FOR UPDATE SKIP LOCKED
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
        SELECT pg_catalog.count(*), pg_catalog.max(k.opportunity_id) INTO v_moved, v_last FROM kept AS k;
        EXIT WHEN v_moved = 0;
        archived := archived + v_moved;
        v_after := v_last;
        RAISE NOTICE 'archived % deals closed before % (% in this call)', v_moved, p_closed_before, archived;
        COMMIT;
    END LOOP;
    SELECT pg_catalog.count(*) INTO v_left
      FROM public.sales_pipeline AS p
     WHERE pg_catalog.regexp_replace(pg_catalog.lower(pg_catalog.normalize(p.deal_stage, 'NFKC')),
                                     '[^[:alnum:]]+', '', 'g') IN ('won', 'lost')
       AND p.close_date OPERATOR(pg_catalog.<) p_closed_before;
    IF v_left > 0 THEN
        RAISE NOTICE '% closed deals before % are still in sales_pipeline (locked or changed by the CRM meanwhile): call again later to move them',
            v_left, p_closed_before;
    END IF;
END
$proc$;

COMMENT ON PROCEDURE public.archive_closed_deals(date, integer, bigint) IS  -- noqa: LT01
'The CRM''s archiving routine (DBA): moves closed deals (Won, Lost) that closed before a day from '
'sales_pipeline into sales_pipeline_archive in committed batches; resumable; the warehouse keeps them live, '
'marked archived.';
