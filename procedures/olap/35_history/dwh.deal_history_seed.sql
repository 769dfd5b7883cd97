-- View: dwh.deal_history_seed
--     The history the initial load knows of each deal, made from its fact:
--     right for the deals no window has touched since (no row of them in
--     dwh.fact_deal_history: their facts are as the initial load wrote them),
--     which is where dwh.v_deal_history and dwh.apply_deal_history (a deal's
--     first touch) take it; a touched deal's rows here mean nothing. (The
--     anti-join is theirs: the history step makes it against the window's
--     few deals, where this view's would scan the history.) A closed deal
--     engaged before it closed is Engaging from its engage date to its close
--     date (value NULL, as the CRM holds an open deal's), then in its closed
--     stage from its close date; an open deal is in its stage from its engage
--     date. A date the deal lacks (or the calendar does not hold) is the
--     initial load's snapshot time. Dates count at 00:00 UTC, as product
--     versions do. Every row starts a stay in its stage (entered_stage);
--     later_stages lists the stages the deal entered after it (the seed's
--     conversions: Engaging, then Won or Lost).
--     Why a view and not rows: writing them cost a third of the initial load
--     (measured: 9.4 s of 29 s at scale 100); dwh.apply_deal_history copies a
--     deal's seed into the table the first time a window touches the deal,
--     before the fact step rewrites its fact.
-- Tables: reads dwh.fact_sales_performance (both parts, hot and cold),
--     dwh.dim_deal_stage, etl.run (the latest initial load).
CREATE OR REPLACE VIEW dwh.deal_history_seed AS
SELECT
    f.opportunity_id,
    CASE
        WHEN k.engaging_row THEN t.engaged_at
        WHEN f.is_closed THEN t.closed_at
        ELSE coalesce(t.engaged_at, l.source_snapshot_at)
    END AS valid_from,
    CASE WHEN k.engaging_row THEN t.closed_at ELSE 'infinity'::timestamptz END AS valid_to,
    CASE WHEN k.engaging_row THEN l.engaging ELSE f.deal_stage_key END AS deal_stage_key,
    f.sales_agent_key,
    f.product_key,
    f.account_key,
    (CASE WHEN NOT k.engaging_row THEN f.close_value END)::numeric(18, 2) AS close_value,
    f.engage_date_key,
    f.close_date_key,
    f.is_closed AND NOT k.engaging_row AS is_closed,
    f.is_won AND NOT k.engaging_row AS is_won,
    TRUE AS entered_stage,
    NULL::xid8 AS txid,
    NULL::bigint AS change_id,
    l.run_id,
    CASE WHEN k.engaging_row THEN ARRAY[f.deal_stage_key] ELSE '{}'::smallint[] END AS later_stages
FROM (
    SELECT
        r.run_id,
        r.source_snapshot_at,
        (
            SELECT s.deal_stage_key FROM dwh.dim_deal_stage AS s
            WHERE s.deal_stage_name = 'Engaging'
        ) AS engaging
    FROM etl.run AS r
    WHERE r.pipeline = 'initial_load'
    ORDER BY r.run_id DESC
    LIMIT 1
) AS l
CROSS JOIN dwh.fact_sales_performance AS f
CROSS JOIN
    LATERAL (  -- noqa: ST05
        SELECT
            CASE
                WHEN f.engage_date_key <> -1
                    THEN make_date(f.engage_date_key / 10000, f.engage_date_key / 100 % 100, f.engage_date_key % 100)
                        ::timestamp AT TIME ZONE 'UTC'
            END AS engaged_at,
            CASE
                WHEN f.close_date_key <> -1
                    THEN make_date(f.close_date_key / 10000, f.close_date_key / 100 % 100, f.close_date_key % 100)
                        ::timestamp AT TIME ZONE 'UTC'
                ELSE l.source_snapshot_at
            END AS closed_at
    ) AS t
-- Two rows for a closed deal engaged before it closed (Engaging until it
-- closed, then its closed stage), one for every other deal. (A join with two
-- values, not a lateral UNION ALL: Citus pushes the first down to the shards.)
CROSS JOIN (VALUES (TRUE), (FALSE)) AS k (engaging_row)
WHERE
    NOT f.is_deleted
    AND (NOT k.engaging_row OR f.is_closed AND t.engaged_at < t.closed_at);

COMMENT ON VIEW dwh.deal_history_seed IS
'The initial load''s history of each deal, made from its fact (right for the deals no window touched '
'since, which is where dwh.v_deal_history uses it): Engaging from '
'the engage date to the close date, then the closed stage; open deals in their stage from the engage date; '
'a missing date is the load''s snapshot time.';
COMMENT ON COLUMN dwh.deal_history_seed.opportunity_id IS
'The deal (business key of dwh.fact_sales_performance).';
COMMENT ON COLUMN dwh.deal_history_seed.valid_from IS
'When the deal took these values: a changed_at (rows of the table); the engage or close date at 00:00 UTC, '
'else the initial load''s snapshot time (seed rows).';
COMMENT ON COLUMN dwh.deal_history_seed.valid_to IS
'When the next row starts or a delete ended the deal; infinity while current.';
COMMENT ON COLUMN dwh.deal_history_seed.deal_stage_key IS
'The stage (dim_deal_stage), resolved as the fact step resolves it.';
COMMENT ON COLUMN dwh.deal_history_seed.sales_agent_key IS 'The owner (dim_sales_agent).';
COMMENT ON COLUMN dwh.deal_history_seed.product_key IS
'The product version (dim_product) in effect at the engage date, as the fact step resolves it.';
COMMENT ON COLUMN dwh.deal_history_seed.account_key IS
'The account (dim_account), -1 when none or unresolved.';
COMMENT ON COLUMN dwh.deal_history_seed.close_value IS
'The deal''s value (NULL while open, as the CRM holds it).';
COMMENT ON COLUMN dwh.deal_history_seed.engage_date_key IS
'The engage date the deal had (dim_date key; not tracked).';
COMMENT ON COLUMN dwh.deal_history_seed.close_date_key IS
'The close date the deal had (dim_date key; not tracked).';
COMMENT ON COLUMN dwh.deal_history_seed.is_closed IS 'The stage is closed (Won or Lost).';
COMMENT ON COLUMN dwh.deal_history_seed.is_won IS 'The stage is Won.';
COMMENT ON COLUMN dwh.deal_history_seed.entered_stage IS
'The row starts a stay in its stage (the deal''s previous row, if any, was in another stage).';
COMMENT ON COLUMN dwh.deal_history_seed.txid IS
'Lineage: the source transaction that made the row (NULL: a seed row).';
COMMENT ON COLUMN dwh.deal_history_seed.change_id IS
'Lineage: that transaction''s last cdc.change_log row for the deal (NULL: a seed row).';
COMMENT ON COLUMN dwh.deal_history_seed.run_id IS
'Lineage: the etl run that wrote the row (the initial load, for seed rows).';
COMMENT ON COLUMN dwh.deal_history_seed.later_stages IS
'The stages the deal entered after this row (the closed stage, for the Engaging row of a closed deal).';
