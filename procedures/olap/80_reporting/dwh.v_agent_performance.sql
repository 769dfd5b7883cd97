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
        sum(a.won_value)::numeric(30, 2) AS won_value
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
    coalesce(p.won_value, 0)::numeric(30, 2) AS won_value,
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

COMMENT ON COLUMN dwh.v_agent_performance.sales_agent_key IS
'Surrogate key of the sales agent; -1 for Unknown, shown only when it has closed deals.';
COMMENT ON COLUMN dwh.v_agent_performance.sales_agent_id IS
'Business key: sales_agents.sales_agent_id in the source; NULL for Unknown.';
COMMENT ON COLUMN dwh.v_agent_performance.sales_agent_name IS 'The agent''s name.';
COMMENT ON COLUMN dwh.v_agent_performance.manager_name IS 'The agent''s manager.';
COMMENT ON COLUMN dwh.v_agent_performance.regional_office IS 'The agent''s regional office.';
COMMENT ON COLUMN dwh.v_agent_performance.won_deals IS
'Closed, live deals the agent won, over all months; 0 when none.';
COMMENT ON COLUMN dwh.v_agent_performance.lost_deals IS
'Closed, live deals the agent lost, over all months; 0 when none.';
COMMENT ON COLUMN dwh.v_agent_performance.closed_deals IS 'won_deals + lost_deals.';
COMMENT ON COLUMN dwh.v_agent_performance.won_value IS
'Sum of the close values of the agent''s won deals; 0 when none were won.';
COMMENT ON COLUMN dwh.v_agent_performance.win_rate IS
'Win rate: won / (won + lost), 0 to 1, 4 decimals; NULL without closed deals.';
COMMENT ON COLUMN dwh.v_agent_performance.avg_won_value IS
'Mean close value of a won deal: won_value / won_deals, 2 decimals; NULL without won deals.';
COMMENT ON COLUMN dwh.v_agent_performance.rank_in_office IS
'Rank by won_value among the agents listed for the same regional office: 1 for the highest; ties share a rank and'
' the next rank is skipped.';
