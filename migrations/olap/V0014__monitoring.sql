-- Monitoring: the freshness threshold a health check compares the lag with.
-- etl.v_freshness (procedures/olap/95_monitoring) reports the lag; `b2bdwh
-- status` is unhealthy when it exceeds this (its --max-lag overrides it).
-- Default: twice the interval of the dwh_incremental_update DAG (INTERVAL in
-- dags/dwh_incremental_update.py, 15 minutes): one late run is tolerated,
-- two are not. Change both together.

INSERT INTO etl.config (key, value, description) VALUES
(
    'max_freshness_lag', '30 minutes',
    'Longest the oldest committed source change may wait unapplied before the warehouse '
    'counts as stale (etl.v_freshness.is_fresh, b2bdwh status); an interval. Default: '
    'twice the dwh_incremental_update DAG interval.'
)
ON CONFLICT (key) DO NOTHING;
