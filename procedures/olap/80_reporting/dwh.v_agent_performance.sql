-- View: dwh.v_agent_performance
--     Closed-deal performance of each live sales agent, with the agent's
--     manager and regional office: deals won and lost, won value, win rate,
--     the agent's rank by won value in the office. Reads the monthly
--     aggregate (closed, live deals only); an agent without closed deals
--     shows zeros. The Unknown agent (-1) appears only when it has deals.
-- Columns:
--     win_rate            - won / (won + lost), a fraction from 0 to 1
--     rank_in_office      - 1 for the office's highest won value
-- Tables: reads dwh.fact_sales_monthly_aggregate, dwh.dim_sales_agent.
CREATE OR REPLACE VIEW dwh.v_agent_performance AS
WITH per_agent AS (
    SELECT
        a.sales_agent_key,
        sum(a.won_deals)::integer AS won_deals,
        sum(a.lost_deals)::integer AS lost_deals,
        sum(a.won_value)::numeric(18, 2) AS won_value
    FROM dwh.fact_sales_monthly_aggregate AS a
    GROUP BY a.sales_agent_key
)

SELECT
    g.sales_agent_key,
    g.sales_agent_id,
    g.sales_agent_name,
    g.manager_name,
    g.regional_office,
    coalesce(p.won_deals, 0) AS won_deals,
    coalesce(p.lost_deals, 0) AS lost_deals,
    coalesce(p.won_deals + p.lost_deals, 0) AS closed_deals,
    coalesce(p.won_value, 0)::numeric(18, 2) AS won_value,
    round(p.won_deals::numeric / nullif(p.won_deals + p.lost_deals, 0), 4) AS win_rate,
    round(p.won_value / nullif(p.won_deals, 0), 2) AS avg_won_value,
    rank() OVER (
        PARTITION BY g.regional_office ORDER BY coalesce(p.won_value, 0) DESC
    ) AS rank_in_office
FROM dwh.dim_sales_agent AS g
LEFT JOIN per_agent AS p ON g.sales_agent_key = p.sales_agent_key
WHERE NOT g.is_deleted AND (g.sales_agent_key <> -1 OR p.sales_agent_key IS NOT NULL);

COMMENT ON VIEW dwh.v_agent_performance IS
'One row per live sales agent, with manager and regional office: closed live deals won and lost, won value, '
'win rate (0 to 1) and rank by won value within the office. From the monthly aggregate.';
