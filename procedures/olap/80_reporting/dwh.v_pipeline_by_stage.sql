-- View: dwh.v_pipeline_by_stage
--     The open pipeline: one row per open deal stage (Prospecting, Engaging),
--     with its live open deals, their value at list price and their age in
--     days since the engage date. Ages are measured to as_of_date: today, or
--     the last date the data holds (the latest engage or close date of a live
--     deal) when that is earlier, so that a historical data set still shows
--     meaningful ages. Deals without an engage date count, without an age.
-- Tables: reads dwh.fact_sales_performance, dwh.dim_deal_stage, dwh.dim_date.
CREATE OR REPLACE VIEW dwh.v_pipeline_by_stage AS
WITH live AS (
    SELECT
        f.deal_stage_key,
        f.is_closed,
        f.list_price,
        e.full_date AS engage_date,
        c.full_date AS close_date
    FROM dwh.fact_sales_performance AS f
    INNER JOIN dwh.dim_date AS e ON f.engage_date_key = e.date_key
    INNER JOIN dwh.dim_date AS c ON f.close_date_key = c.date_key
    WHERE NOT f.is_deleted
),

as_of AS (
    SELECT least(current_date, greatest(max(l.engage_date), max(l.close_date))) AS as_of_date
    FROM live AS l
),

open_deals AS (
    SELECT
        l.deal_stage_key,
        count(*) AS open_deals,
        count(*) FILTER (WHERE l.engage_date IS NULL) AS without_engage_date,
        sum(l.list_price) AS list_value,
        avg(o.as_of_date - l.engage_date) AS avg_age_days,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY o.as_of_date - l.engage_date) AS median_age_days,
        max(o.as_of_date - l.engage_date) AS max_age_days,
        min(l.engage_date) AS oldest_engage_date
    FROM live AS l
    CROSS JOIN as_of AS o
    WHERE NOT l.is_closed
    GROUP BY l.deal_stage_key
)

SELECT
    s.deal_stage_key,
    s.deal_stage_name,
    s.stage_order,
    coalesce(d.open_deals, 0)::integer AS open_deals,
    round(coalesce(d.list_value, 0), 2) AS list_value,
    coalesce(d.without_engage_date, 0)::integer AS deals_without_engage_date,
    round(d.avg_age_days, 1) AS avg_age_days,
    d.median_age_days,
    d.max_age_days,
    d.oldest_engage_date,
    (SELECT o.as_of_date FROM as_of AS o) AS as_of_date
FROM dwh.dim_deal_stage AS s
LEFT JOIN open_deals AS d ON s.deal_stage_key = d.deal_stage_key
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
