-- Procedure: public.restore_archived_deals(p_opportunity_ids text[], INOUT restored bigint)
--     Brings archived deals back into the CRM: moves them from
--     public.sales_pipeline_archive into public.sales_pipeline, as they were
--     archived (archived_at dropped), in one statement and one transaction,
--     all or nothing. The CRM can then change them like any deal; a
--     warehouse applies the move (the deal live and no longer archived) and
--     every later change exactly once, like any change.
-- Parameters:
--     p_opportunity_ids - the deals to bring back (each must be archived)
--     restored          - out: the deals moved back
-- Raises: 22004 for a NULL list; 23505 naming the deals sales_pipeline holds
--     already, P0002 naming the ids the archive does not hold (nothing is
--     restored either way). (The archive has sales_pipeline's foreign keys:
--     the agent, product and account of an archived deal are still there.)
-- Tables: deletes from public.sales_pipeline_archive; inserts into
--     public.sales_pipeline (both captured in cdc.change_log).
-- Security: runs with the caller's rights (a DBA's); search_path pinned;
--     b2b_app may not call it.
CREATE OR REPLACE PROCEDURE public.restore_archived_deals(
    p_opportunity_ids text[],
    INOUT restored bigint DEFAULT NULL
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $proc$
DECLARE
    v_live text[];
    v_missing text[];
BEGIN
    IF p_opportunity_ids IS NULL THEN
        RAISE EXCEPTION 'public.restore_archived_deals: the list of deals is NULL' USING ERRCODE = '22004';
    END IF;
    v_live := ARRAY(
        SELECT DISTINCT k.id FROM unnest(p_opportunity_ids) AS k (id)
         WHERE EXISTS (SELECT FROM public.sales_pipeline AS p WHERE p.opportunity_id = k.id)
         ORDER BY 1
    );
    IF cardinality(v_live) > 0 THEN
        RAISE EXCEPTION 'public.restore_archived_deals: % of the deals are in sales_pipeline already: %',
            cardinality(v_live), array_to_string(v_live[1:20], ', ')
            USING ERRCODE = '23505', HINT = 'Nothing was restored.';
    END IF;
    v_missing := ARRAY(
        SELECT DISTINCT k.id FROM unnest(p_opportunity_ids) AS k (id)
         WHERE NOT EXISTS (SELECT FROM public.sales_pipeline_archive AS a WHERE a.opportunity_id = k.id)
         ORDER BY 1
    );
    IF cardinality(v_missing) > 0 THEN
        RAISE EXCEPTION 'public.restore_archived_deals: % of the deals are not in the archive: %',
            cardinality(v_missing), array_to_string(v_missing[1:20], ', ', 'NULL')
            USING ERRCODE = 'P0002', HINT = 'Nothing was restored.';
    END IF;
    WITH back AS (
        DELETE FROM public.sales_pipeline_archive AS a
         WHERE a.opportunity_id = ANY (p_opportunity_ids)
        RETURNING a.*
    ),
    returned AS (
        INSERT INTO public.sales_pipeline (
            opportunity_id, sales_agent_id, product_id, account_id, deal_stage, engage_date,
            close_date, close_value
        )
        SELECT b.opportunity_id, b.sales_agent_id, b.product_id, b.account_id, b.deal_stage,
               b.engage_date, b.close_date, b.close_value
          FROM back AS b
        RETURNING 1
    )
    SELECT count(*) INTO restored FROM returned;
END
$proc$;

COMMENT ON PROCEDURE public.restore_archived_deals(text[], bigint) IS  -- noqa: LT01
'Brings archived deals back: moves them from sales_pipeline_archive into sales_pipeline, all or nothing; '
'the CRM may then change them like any deal.';
