-- Function: dwh.apply_deal_history(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_deal_history: keeps dwh.fact_deal_history, every
--     deal's stage, agent, product, account and value over time.
--     Initial load (the seed, one INSERT ... SELECT over the facts the fact
--     step just wrote, their keys and indexes set aside meanwhile as the fact
--     step does): what the source knows of each deal's past. A closed deal
--     engaged before it closed is Engaging from its engage date to its close
--     date (value NULL, as the CRM holds an open deal's), then in its closed
--     stage from the close date; an open deal is in its stage from its engage
--     date. A date it lacks (or the calendar does not hold) is the load's
--     snapshot time. Dates count at 00:00 UTC, as product versions do.
--     Incremental update: the time rule of the product versions
--     (dwh.apply_product_versions): every committed transaction of the window
--     that touched a deal is one event at its last changed_at (several
--     statements in one transaction collapse), with the deal's last image in
--     it (the capture trigger logs deals whole). Whether the deal exists after
--     it follows from its inserts and deletes counted, not from their log
--     order. After the deal's last event of the window, the deal is exactly
--     its fact as the fact step just wrote it (the window's snapshot; a
--     deleted or quarantined deal is absent), so the history's current row
--     agrees with the fact by construction and the keys are the fact step's
--     own; an earlier event's image is resolved by the same rules (stage by
--     name, else trimmed and case-folded, else Unknown; account and agent by
--     id, else Unknown; product version at the engage date, the latest one
--     without; a value no column holds makes the deal absent, as quarantine
--     retires its fact).
--     An event makes a row only when it alters a tracked attribute (stage,
--     agent, product, account, value; the product compared by product id, so
--     a version move alone is no change), or brings the deal back; a delete
--     closes the row in effect. Applying an event at t cuts the deal's
--     history at t: the row in effect is closed at t, rows from t on (a seed
--     row at a future close or engage date) give way.
--     Exactly once: the step commits once, and a window applied again (its run
--     died before the aggregate step marked it applied) finds its own rows:
--     the first event compares with the row in effect at its time, which is
--     then its own copy, and every later row is written over its copy
--     (removed from the first changed event on, then inserted again); the
--     unique key (opportunity_id, valid_from) refuses anything else.
-- Returns: NULL (done).
-- Tables: reads dwh.fact_sales_performance, etl.change_window, dwh dimensions,
--     dwh.product_version_lookup, etl.run, etl.config; writes
--     dwh.fact_deal_history (initial load: truncate, insert; incremental:
--     insert, update, delete).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.apply_deal_history(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run etl.run;
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_engaging smallint;
    v_in bigint := 0;
    v_inserted bigint := 0;
    v_closed bigint := 0;
    v_removed bigint := 0;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.apply_deal_history');
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;

    IF v_run.pipeline = 'initial_load' THEN
        SELECT s.deal_stage_key INTO v_engaging FROM dwh.dim_deal_stage AS s
         WHERE s.deal_stage_name = 'Engaging';
        -- A rebuild, or this step run again: the seed is all or nothing.
        TRUNCATE dwh.fact_deal_history;
        PERFORM etl.suspend_ddl('dwh.fact_deal_history');
        INSERT INTO dwh.fact_deal_history (
            opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, product_key,
            account_key, close_value, engage_date_key, close_date_key, is_closed, is_won,
            entered_stage, run_id
        )
        SELECT f.opportunity_id, p.valid_from, p.valid_to, p.deal_stage_key, f.sales_agent_key,
               f.product_key, f.account_key, p.close_value, f.engage_date_key, f.close_date_key,
               p.is_closed, p.is_won, true, v_run.run_id
          FROM dwh.fact_sales_performance AS f
         CROSS JOIN LATERAL (
             SELECT CASE WHEN f.engage_date_key <> -1
                         THEN make_date(f.engage_date_key / 10000, f.engage_date_key / 100 % 100,
                                        f.engage_date_key % 100)::timestamp AT TIME ZONE 'UTC'
                    END AS engaged_at,
                    CASE WHEN f.close_date_key <> -1
                         THEN make_date(f.close_date_key / 10000, f.close_date_key / 100 % 100,
                                        f.close_date_key % 100)::timestamp AT TIME ZONE 'UTC'
                         ELSE v_run.source_snapshot_at
                    END AS closed_at
         ) AS t
         CROSS JOIN LATERAL (
             -- A closed deal was Engaging from its engage date until it closed.
             SELECT t.engaged_at AS valid_from, t.closed_at AS valid_to, v_engaging AS deal_stage_key,
                    NULL::numeric AS close_value, false AS is_closed, false AS is_won
              WHERE f.is_closed AND t.engaged_at < t.closed_at
             UNION ALL
             SELECT CASE WHEN f.is_closed THEN t.closed_at
                         ELSE coalesce(t.engaged_at, v_run.source_snapshot_at) END,
                    'infinity', f.deal_stage_key, f.close_value, f.is_closed, f.is_won
         ) AS p
         WHERE NOT f.is_deleted;
        GET DIAGNOSTICS v_inserted = ROW_COUNT;
        PERFORM etl.restore_ddl('dwh.fact_deal_history');
        SELECT count(*) INTO v_in FROM dwh.fact_sales_performance AS f WHERE NOT f.is_deleted;
        PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted);
        RETURN NULL;
    END IF;

    -- One event per (deal, transaction) of the window.
    IF to_regclass('pg_temp.deal_event') IS NOT NULL THEN
        DROP TABLE pg_temp.deal_event;
    END IF;
    CREATE TEMPORARY TABLE deal_event ON COMMIT DROP AS
    WITH tx AS (
        SELECT w.row_key AS opportunity_id, w.txid,
               count(*) FILTER (WHERE w.operation = 'I')
                   - count(*) FILTER (WHERE w.operation = 'D') AS presence_delta,
               count(*) FILTER (WHERE w.operation IN ('I', 'D')) > 0 AS moves_in_or_out,
               (array_agg(w.row_data ORDER BY w.change_id DESC) FILTER (WHERE w.operation <> 'D'))[1]
                   AS image,
               max(w.changed_at) AS changed_at,
               max(w.change_id) AS change_id
          FROM etl.change_window AS w
         WHERE w.table_name = 'sales_pipeline' AND w.row_key IS NOT NULL
         GROUP BY w.row_key, w.txid
    ),
    chained AS (
        SELECT t.*,
               row_number() OVER w AS n,
               count(*) OVER (PARTITION BY t.opportunity_id) AS events,
               min(t.changed_at) OVER (PARTITION BY t.opportunity_id) AS window_start,
               array_agg(t.presence_delta) FILTER (WHERE t.presence_delta <> 0) OVER w AS moves
          FROM tx AS t
        WINDOW w AS (PARTITION BY t.opportunity_id ORDER BY t.changed_at, t.change_id
                     ROWS UNBOUNDED PRECEDING)
    ),
    image AS (
        -- An earlier event's image, typed and bounded as the fact step
        -- bounds a staged row.
        SELECT c.opportunity_id, c.n,
               c.image ->> 'deal_stage' AS deal_stage,
               (c.image ->> 'sales_agent_id')::integer AS sales_agent_id,
               (c.image ->> 'product_id')::integer AS product_id,
               (c.image ->> 'account_id')::integer AS account_id,
               (c.image ->> 'close_value')::numeric AS close_value,
               CASE WHEN (c.image ->> 'engage_date')::date BETWEEN v_min AND v_max
                    THEN (c.image ->> 'engage_date')::date END AS engage_date,
               CASE WHEN (c.image ->> 'close_date')::date BETWEEN v_min AND v_max
                    THEN (c.image ->> 'close_date')::date END AS close_date
          FROM chained AS c
         WHERE c.n < c.events AND c.image IS NOT NULL
    ),
    resolved AS (
        SELECT i.opportunity_id, i.n,
               -- numeric(18, 2) holds it (else quarantined: the deal is absent)
               i.close_value <> 'NaN'::numeric AND abs(round(i.close_value, 2)) < 1e16
               OR i.close_value IS NULL AS storable,
               coalesce(exact.deal_stage_key, folded.deal_stage_key, -1)::smallint AS deal_stage_key,
               coalesce(g.sales_agent_key, -1) AS sales_agent_key,
               coalesce(v.product_key, -1) AS product_key,
               v.product_id,
               coalesce(a.account_key, -1) AS account_key,
               CASE WHEN i.close_value <> 'NaN'::numeric AND abs(round(i.close_value, 2)) < 1e16
                    THEN round(i.close_value, 2) END AS close_value,
               dwh.date_key(i.engage_date) AS engage_date_key,
               dwh.date_key(i.close_date) AS close_date_key
          FROM image AS i
          LEFT JOIN dwh.dim_deal_stage AS exact
                 ON exact.deal_stage_name = i.deal_stage AND exact.deal_stage_key <> -1
          LEFT JOIN dwh.dim_deal_stage AS folded
                 ON dwh.deal_stage_match_key(folded.deal_stage_name)
                    = CASE WHEN exact.deal_stage_key IS NULL THEN dwh.deal_stage_match_key(i.deal_stage) END
                AND folded.deal_stage_key <> -1
          LEFT JOIN dwh.dim_account AS a ON a.account_id = i.account_id
          LEFT JOIN dwh.dim_sales_agent AS g ON g.sales_agent_id = i.sales_agent_id
          LEFT JOIN dwh.product_version_lookup AS v
                 ON v.product_id = i.product_id
                AND CASE WHEN i.engage_date IS NOT NULL
                         THEN i.engage_date >= v.lookup_first_day AND i.engage_date < v.lookup_before_day
                         ELSE v.is_latest
                    END
    )
    SELECT c.opportunity_id, c.n, c.txid, c.change_id, c.changed_at, c.window_start,
           -- the deal is there after the event (and storable)
           CASE WHEN c.n = c.events THEN f.opportunity_id IS NOT NULL AND NOT f.is_deleted
                ELSE CASE WHEN c.moves IS NOT NULL THEN c.moves[array_upper(c.moves, 1)] > 0
                          WHEN NOT c.moves_in_or_out THEN true
                     END
                     AND r.storable
           END AS present,
           CASE WHEN c.n = c.events THEN f.deal_stage_key ELSE r.deal_stage_key END AS deal_stage_key,
           CASE WHEN c.n = c.events THEN f.sales_agent_key ELSE r.sales_agent_key END AS sales_agent_key,
           CASE WHEN c.n = c.events THEN f.product_key ELSE r.product_key END AS product_key,
           CASE WHEN c.n = c.events THEN fp.product_id ELSE r.product_id END AS product_id,
           CASE WHEN c.n = c.events THEN f.account_key ELSE r.account_key END AS account_key,
           CASE WHEN c.n = c.events THEN f.close_value ELSE r.close_value END AS close_value,
           CASE WHEN c.n = c.events THEN f.engage_date_key ELSE r.engage_date_key END AS engage_date_key,
           CASE WHEN c.n = c.events THEN f.close_date_key ELSE r.close_date_key END AS close_date_key
      FROM chained AS c
      LEFT JOIN resolved AS r ON r.opportunity_id = c.opportunity_id AND r.n = c.n
      LEFT JOIN dwh.fact_sales_performance AS f ON f.opportunity_id = c.opportunity_id AND c.n = c.events
      LEFT JOIN dwh.dim_product AS fp ON fp.product_key = f.product_key;
    GET DIAGNOSTICS v_in = ROW_COUNT;

    -- Whether the deal was there before the window: the row in effect just
    -- before its first event (valid_to reaches it: a row this window closed
    -- at its first event on an earlier attempt counts too). An event that
    -- neither moves the deal in or out nor ends the window (moves NULL,
    -- with inserts and deletes netting out) leaves it as it was.
    UPDATE deal_event AS e
       SET present = coalesce((SELECT true FROM dwh.fact_deal_history AS h
                                WHERE h.opportunity_id = e.opportunity_id
                                  AND h.valid_from < e.window_start AND h.valid_to >= e.window_start), false)
     WHERE e.present IS NULL AND e.n = 1;
    UPDATE deal_event AS e
       SET present = coalesce((SELECT p.present FROM deal_event AS p
                                WHERE p.opportunity_id = e.opportunity_id AND p.n < e.n AND p.present IS NOT NULL
                                ORDER BY p.n DESC LIMIT 1), false)
     WHERE e.present IS NULL;

    -- Each event with the state before it: the previous event's, or for the
    -- first, the row in effect at its time (its own copy when the window is
    -- applied again: then it changes nothing).
    CREATE TEMPORARY TABLE deal_change ON COMMIT DROP AS
    WITH stated AS (
        SELECT e.*,
               CASE WHEN e.n = 1 THEN b.opportunity_id IS NOT NULL ELSE lag(e.present) OVER w END
                   AS present_before,
               CASE WHEN e.n = 1 THEN b.deal_stage_key ELSE lag(e.deal_stage_key) OVER w END AS stage_before,
               CASE WHEN e.n = 1 THEN b.sales_agent_key ELSE lag(e.sales_agent_key) OVER w END AS agent_before,
               CASE WHEN e.n = 1 THEN bp.product_id ELSE lag(e.product_id) OVER w END AS product_before,
               CASE WHEN e.n = 1 THEN b.account_key ELSE lag(e.account_key) OVER w END AS account_before,
               CASE WHEN e.n = 1 THEN b.close_value ELSE lag(e.close_value) OVER w END AS value_before
          FROM deal_event AS e
          LEFT JOIN dwh.fact_deal_history AS b
                 ON e.n = 1 AND b.opportunity_id = e.opportunity_id
                AND b.valid_from <= e.changed_at AND b.valid_to > e.changed_at
          LEFT JOIN dwh.dim_product AS bp ON bp.product_key = b.product_key
        WINDOW w AS (PARTITION BY e.opportunity_id ORDER BY e.n)
    )
    SELECT s.*,
           -- a present deal's stay in its stage starts here
           NOT s.present_before OR s.stage_before IS DISTINCT FROM s.deal_stage_key AS entered_stage
      FROM stated AS s
     WHERE CASE WHEN NOT s.present THEN s.present_before
                ELSE NOT s.present_before
                     OR (s.deal_stage_key, s.sales_agent_key, s.product_id, s.account_key, s.close_value)
                        IS DISTINCT FROM (s.stage_before, s.agent_before, s.product_before, s.account_before,
                                          s.value_before)
           END;

    -- The cut at each deal's first change: rows from then on give way (a
    -- seed row at a future date, or this window's own rows of an earlier
    -- attempt), the row in effect ends there.
    WITH first_change AS (
        SELECT c.opportunity_id, min(c.changed_at) AS changed_at FROM deal_change AS c GROUP BY 1
    ),
    removed AS (
        DELETE FROM dwh.fact_deal_history AS h
         USING first_change AS c
         WHERE h.opportunity_id = c.opportunity_id AND h.valid_from >= c.changed_at
        RETURNING 1
    )
    SELECT count(*) INTO v_removed FROM removed;
    UPDATE dwh.fact_deal_history AS h
       SET valid_to = c.changed_at, run_id = v_run.run_id
      FROM (SELECT c.opportunity_id, min(c.changed_at) AS changed_at FROM deal_change AS c GROUP BY 1) AS c
     WHERE h.opportunity_id = c.opportunity_id
       AND h.valid_from < c.changed_at AND h.valid_to > c.changed_at;
    GET DIAGNOSTICS v_closed = ROW_COUNT;

    -- Each change that leaves the deal present is a row up to the next change.
    INSERT INTO dwh.fact_deal_history (
        opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, product_key,
        account_key, close_value, engage_date_key, close_date_key, is_closed, is_won,
        entered_stage, txid, change_id, run_id
    )
    SELECT c.opportunity_id, c.changed_at, coalesce(c.next_at, 'infinity'), c.deal_stage_key,
           c.sales_agent_key, c.product_key, c.account_key, c.close_value, c.engage_date_key,
           c.close_date_key, coalesce(st.is_closed, false), coalesce(st.is_won, false), c.entered_stage,
           c.txid, c.change_id, v_run.run_id
      FROM (SELECT d.*, lead(d.changed_at) OVER (PARTITION BY d.opportunity_id ORDER BY d.n) AS next_at
              FROM deal_change AS d) AS c
      LEFT JOIN dwh.dim_deal_stage AS st ON st.deal_stage_key = c.deal_stage_key
     WHERE c.present
     ORDER BY c.opportunity_id, c.changed_at;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_closed, p_deleted => v_removed);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.apply_deal_history(bigint) IS
'Unit of dwh.load_deal_history: seeds dwh.fact_deal_history from the facts (initial load), or adds '
'one row per committed transaction of the window that altered a deal''s stage, agent, product, '
'account or value, valid from its changed_at (incremental); safe to apply a window again.';
