-- View: dwh.v_pipeline_by_stage
--     The open pipeline: one row per open deal stage (Prospecting, Engaging),
--     with its live open deals, their value at list price and their age in
--     days since the engage date. Ages are measured to as_of_date: today, or
--     the last date the data holds (the latest engage or close date of a live
--     deal) when that is earlier, so that a historical data set still shows
--     meaningful ages. Deals without an engage date count, without an age.
--     Reads the open pipeline summary (dwh.fact_sales_open_pipeline: live
--     open deals counted per stage and engage day, kept with the monthly
--     aggregate by exact deltas): the mean, the median and the oldest age
--     follow from those counts, exactly as from the deals. The latest close
--     date is the last entry of the account summary's last_close_key index.
--     dwh.v_pipeline_by_stage_from_facts is the same view over the facts,
--     which it must equal.
-- Tables: reads dwh.fact_sales_open_pipeline, dwh.fact_sales_account_summary,
--     dwh.dim_deal_stage, dwh.dim_date.
CREATE OR REPLACE VIEW dwh.v_pipeline_by_stage AS
WITH open_days AS (
    SELECT
        d.deal_stage_key,
        e.full_date AS engage_date,
        d.deals,
        d.list_value
    FROM (
        SELECT
            o.deal_stage_key,
            o.engage_date_key,
            o.open_deals::bigint AS deals,
            o.list_value
        FROM dwh.fact_sales_open_pipeline AS o
    ) AS d
    INNER JOIN dwh.dim_date AS e ON d.engage_date_key = e.date_key
),

as_of AS (
    SELECT
        least(
            current_date,
            greatest(
                (SELECT max(o.engage_date) FROM open_days AS o),
                (
                    SELECT c.full_date FROM dwh.dim_date AS c
                    WHERE c.date_key = (
                            SELECT max(s.last_close_key) FROM dwh.fact_sales_account_summary AS s
                        )
                )
            )
        ) AS as_of_date
),

ages AS (
    SELECT
        o.deal_stage_key,
        a.as_of_date - o.engage_date AS age_days,
        o.deals,
        sum(o.deals) OVER (
            PARTITION BY o.deal_stage_key ORDER BY o.engage_date DESC ROWS UNBOUNDED PRECEDING
        ) AS through,
        sum(o.deals) OVER (PARTITION BY o.deal_stage_key) AS aged
    FROM open_days AS o
    CROSS JOIN as_of AS a
    WHERE o.engage_date IS NOT NULL
),

-- percentile_cont(0.5) over the deals: positions (aged - 1) / 2 rounded down
-- and up, 0-based in age order, interpolated.
medians AS (
    SELECT
        g.deal_stage_key,
        max(g.age_days) FILTER (
            WHERE floor((g.aged - 1) / 2.0) BETWEEN g.through - g.deals AND g.through - 1
        ) AS lower_age,
        max(g.age_days) FILTER (
            WHERE ceil((g.aged - 1) / 2.0) BETWEEN g.through - g.deals AND g.through - 1
        ) AS upper_age
    FROM ages AS g
    GROUP BY g.deal_stage_key
),

open_deals AS (
    SELECT
        o.deal_stage_key,
        sum(o.deals) AS open_deals,
        sum(o.deals) FILTER (WHERE o.engage_date IS NULL) AS without_engage_date,
        sum(o.list_value) AS list_value,
        sum((a.as_of_date - o.engage_date) * o.deals)::numeric
        / nullif(sum(o.deals) FILTER (WHERE o.engage_date IS NOT NULL), 0) AS avg_age_days,
        max(a.as_of_date - o.engage_date) AS max_age_days,
        min(o.engage_date) AS oldest_engage_date
    FROM open_days AS o
    CROSS JOIN as_of AS a
    GROUP BY o.deal_stage_key
)

SELECT
    s.deal_stage_key,
    s.deal_stage_name,
    s.stage_order,
    coalesce(d.open_deals, 0)::integer AS open_deals,
    round(coalesce(d.list_value, 0), 2) AS list_value,
    coalesce(d.without_engage_date, 0)::integer AS deals_without_engage_date,
    round(d.avg_age_days, 1) AS avg_age_days,
    (m.lower_age + (m.upper_age - m.lower_age) / 2.0)::double precision AS median_age_days,
    d.max_age_days,
    d.oldest_engage_date,
    (SELECT o.as_of_date FROM as_of AS o) AS as_of_date
FROM dwh.dim_deal_stage AS s
LEFT JOIN open_deals AS d ON s.deal_stage_key = d.deal_stage_key
LEFT JOIN medians AS m ON s.deal_stage_key = m.deal_stage_key
WHERE NOT s.is_closed AND (s.deal_stage_key <> -1 OR d.open_deals > 0);

COMMENT ON VIEW dwh.v_pipeline_by_stage IS
'One row per open deal stage: live open deals, their value at list price, and their age in days from the '
'engage date to as_of_date (today, or the latest date in the data when earlier); deals without an engage '
'date are counted but have no age.';

COMMENT ON COLUMN dwh.v_pipeline_by_stage.deal_stage_key IS
'Key of the open stage: 1 Prospecting, 2 Engaging; -1 Unknown, shown only with open deals.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.deal_stage_name IS 'The stage as the CRM names it.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.stage_order IS 'Position in the pipeline.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.open_deals IS 'Live open deals at this stage; 0 when none.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.list_value IS
'Sum of the list prices of those deals (of the product version each resolved to); 0 when none.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.deals_without_engage_date IS
'Of open_deals, those without an engage date: counted, but without an age.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.avg_age_days IS
'Mean age in days (as_of_date - engage date) of the open deals with an engage date, 1 decimal; NULL when there '
'are none.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.median_age_days IS
'Median age in days of the open deals with an engage date (interpolated: may end in .5); NULL when there are none.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.max_age_days IS
'Age in days of the oldest open deal: as_of_date - oldest_engage_date.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.oldest_engage_date IS
'Earliest engage date of the stage''s open deals; NULL when none has one.';
COMMENT ON COLUMN dwh.v_pipeline_by_stage.as_of_date IS
'The date ages are measured to, the same on every row: today, or the latest engage or close date of a live deal '
'when that is earlier.';
