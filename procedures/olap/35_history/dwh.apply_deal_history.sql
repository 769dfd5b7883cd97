-- Function: dwh.apply_deal_history(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_deal_history: keeps every deal's stage, agent,
--     product, account and value over time (dwh.v_deal_history: the table
--     dwh.fact_deal_history and the seed view dwh.deal_history_seed) and the
--     as-of summaries (dwh.fold_deal_history).
--     Initial load: empties the table and the summaries, and writes the
--     seed's part of the summaries (dwh.fold_deal_history_seed; the seed,
--     every deal's rows as its fact tells them, is a view: nothing is copied).
--     Incremental update: the time rule of the product versions
--     (dwh.apply_product_versions): every committed transaction of the window
--     that touched a deal is one event at its last changed_at (several
--     statements in one transaction collapse), with the deal's last image in
--     it (the capture trigger logs deals whole). Whether the deal exists after
--     it follows from its inserts and deletes counted, not from their log
--     order; after the deal's last event of the window, it is exactly as the
--     window's snapshot has it (etl.stage_sales_pipeline; absent when the
--     snapshot lacks it). Each image is resolved as the fact step resolves a
--     staged deal: the stage by name, else trimmed and case-folded, else
--     Unknown; account and agent by id, else Unknown (-1); the product version
--     in effect at the engage date, the latest one without (or outside the
--     calendar); a value numeric(18, 2) cannot hold (NaN, infinite, 1e16 and
--     more) makes the deal absent, as quarantine retires its fact. The fact
--     step then resolves the snapshot's rows on its own; etl.validate checks
--     that both agree (etl.check_deal_history).
--     A deal's first touch copies its seed rows into the table (the fact is
--     still the initial load's: this step runs before the fact step), unless
--     the window changes nothing of it that the seed is made from (a deal
--     the CRM archived, as it was: below), when its seed stays right.
--     A warehouse migrated to V0019 after its initial load (live facts, no
--     history row, no as-of summary row) gets the seed folded into the
--     summaries first (dwh.fold_deal_history_seed), once.
--     An event makes a row only when it alters a tracked attribute (stage,
--     agent, product, account, value; the product compared by product id, so
--     a version move alone is no change) or brings the deal back; a delete
--     (or quarantine) closes the row in effect. Applying an event at t cuts
--     the deal's history at t: the row in effect ends at t, rows from t on (a
--     seed row at a future close or engage date) give way.
--     The summaries change by the touched deals' rows before the window
--     (out) and after it (in).
--     Exactly once: the step commits once, and a window applied again (its run
--     died before the aggregate step marked it applied) finds its own rows:
--     the first event compares with the row in effect at its time, which is
--     then its own copy, and every later row is written over its copy
--     (removed from the first changed event on, then inserted again); the
--     summaries' before and after are then equal. The unique index on
--     (md5(opportunity_id), valid_from) refuses anything else; the deal's
--     rows are found through it (a key may be too long for a btree entry
--     beside valid_from).
-- Returns: NULL (done).
-- Tables: reads etl.change_window, etl.stage_sales_pipeline, dwh
--     dimensions, dwh.product_version_lookup, dwh.deal_history_seed, etl.run,
--     etl.config; writes dwh.fact_deal_history (insert, update, delete), the
--     summaries (through dwh.fold_deal_history).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.apply_deal_history(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- A window's statements are small: compiling them (JIT, which their estimated
-- cost triggers) took longer than running them; and they look up a few
-- thousand deals among millions, by key, which the default random_page_cost
-- (4, a spinning disk's) made the planner do by scanning every fact.
SET jit = off
SET random_page_cost = 1.1
-- The history only grows (some 8,000 rows a run of 10,000 changes), and the
-- deals' rows are found through the md5 of their key: the planner, which
-- costs md5 like an addition, chose to hash every row of the table for a
-- window's 7,000 deals once it held 300,000 rows (0.64 s and 0.70 s of the
-- step's 2.6 s at scale 1000, growing with every run). Index probes, always.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_run etl.run;
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_in bigint := 0;
    v_inserted bigint := 0;
    v_closed bigint := 0;
    v_removed bigint := 0;
    v_keys text[];
    v_key_md5s text[];
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.apply_deal_history');
    SELECT r.* INTO v_run
      FROM etl.run AS r JOIN etl.loading_metadata AS m USING (run_id)
     WHERE m.loading_metadata_id = p_loading_metadata_id;

    IF to_regclass('pg_temp.deal_history_rows') IS NOT NULL THEN
        DROP TABLE pg_temp.deal_history_rows;
    END IF;

    IF v_run.pipeline = 'initial_load' THEN
        -- Every fact is read here: sequential scans again, until this
        -- function returns (a SET LOCAL under a function's SET clause).
        PERFORM set_config('enable_seqscan', 'on', true);
        -- A rebuild, or this step run again: all or nothing, in one transaction.
        TRUNCATE dwh.fact_deal_history, dwh.deal_pipeline_day, dwh.deal_pipeline_month,
                 dwh.deal_stage_conversion;
        v_inserted := dwh.fold_deal_history_seed(v_run.run_id);
        SELECT count(*) INTO v_in FROM dwh.fact_sales_performance AS f WHERE NOT f.is_deleted;
        PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted);
        RETURN NULL;
    END IF;

    -- A warehouse migrated to V0019 after its initial load has the seed (a
    -- view over its facts) and no as-of summary row, a state no run leaves
    -- (every live deal's seed counts in them). Deltas would start from
    -- nothing: fold the seed in first, once, as an initial load does.
    IF NOT EXISTS (SELECT 1 FROM dwh.deal_pipeline_day)
       AND NOT EXISTS (SELECT 1 FROM dwh.deal_pipeline_month)
       AND NOT EXISTS (SELECT 1 FROM dwh.deal_stage_conversion)
       AND NOT EXISTS (SELECT 1 FROM dwh.fact_deal_history)
       AND EXISTS (SELECT 1 FROM dwh.fact_sales_performance AS f WHERE NOT f.is_deleted) THEN
        PERFORM dwh.fold_deal_history_seed(
            (SELECT r.run_id FROM etl.run AS r WHERE r.pipeline = 'initial_load' ORDER BY r.run_id DESC LIMIT 1));
    END IF;

    -- One event per (deal, transaction) of the window.
    IF to_regclass('pg_temp.deal_event') IS NOT NULL THEN
        DROP TABLE pg_temp.deal_event;
    END IF;
    IF to_regclass('pg_temp.deal_change') IS NOT NULL THEN
        DROP TABLE pg_temp.deal_change;
    END IF;
    CREATE TEMPORARY TABLE deal_event ON COMMIT DROP AS
    WITH tx AS (
        SELECT w.row_key AS opportunity_id, w.txid,
               count(*) FILTER (WHERE w.operation = 'I')
                   - count(*) FILTER (WHERE w.operation = 'D') AS presence_delta,
               count(*) FILTER (WHERE w.operation IN ('I', 'D')) > 0 AS moves_in_or_out,
               -- the last image: read only for the events before a deal's last
               -- one (the last one is the snapshot's row), by change_id
               max(w.change_id) FILTER (WHERE w.operation <> 'D') AS image_change_id,
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
        -- The deal after each event: an earlier event's image, the last
        -- event's snapshot row; typed and bounded as the fact step bounds a
        -- staged row.
        SELECT c.opportunity_id, c.n, i.*,
               CASE WHEN i.engage_date_raw BETWEEN v_min AND v_max THEN i.engage_date_raw END AS engage_date,
               CASE WHEN i.close_date_raw BETWEEN v_min AND v_max THEN i.close_date_raw END AS close_date
          FROM chained AS c
          LEFT JOIN etl.stage_sales_pipeline AS s ON s.opportunity_id = c.opportunity_id AND c.n = c.events
          LEFT JOIN etl.change_window AS w
                 ON c.n < c.events AND w.table_name = 'sales_pipeline' AND w.row_key = c.opportunity_id
                AND w.change_id = c.image_change_id
         CROSS JOIN LATERAL (
             SELECT w.row_data ->> 'deal_stage' AS deal_stage,
                    (w.row_data ->> 'sales_agent_id')::integer AS sales_agent_id,
                    (w.row_data ->> 'product_id')::integer AS product_id,
                    (w.row_data ->> 'account_id')::integer AS account_id,
                    (w.row_data ->> 'close_value')::numeric AS close_value,
                    (w.row_data ->> 'engage_date')::date AS engage_date_raw,
                    (w.row_data ->> 'close_date')::date AS close_date_raw
              WHERE c.n < c.events AND w.row_data IS NOT NULL
             UNION ALL
             SELECT s.deal_stage, s.sales_agent_id, s.product_id, s.account_id, s.close_value,
                    s.engage_date, s.close_date
              WHERE c.n = c.events AND s.opportunity_id IS NOT NULL
         ) AS i
    ),
    resolved AS (
        SELECT i.opportunity_id, i.n,
               -- numeric(18, 2) holds it (else quarantined: the deal is absent)
               i.close_value IS NULL OR i.close_value <> 'NaN'::numeric AND abs(round(i.close_value, 2)) < 1e16
                   AS storable,
               coalesce(exact.deal_stage_key, folded.deal_stage_key, -1)::smallint AS deal_stage_key,
               coalesce(exact.is_closed, folded.is_closed, false) AS is_closed,
               coalesce(exact.is_won, folded.is_won, false) AS is_won,
               coalesce(g.sales_agent_key, -1) AS sales_agent_key,
               coalesce(v.product_key, -1) AS product_key,
               coalesce(v.product_id, -1) AS product_id,
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
                -- Only the versions the window's engage dates can meet, and
                -- the latest, as the fact step bounds a batch's
                -- (dwh.insert_fact_batch): the join's cost stays off the
                -- number of price changes ever made.
                AND (v.is_latest
                     OR v.lookup_before_day > (SELECT min(x.engage_date) FROM image AS x)
                        AND v.lookup_first_day <= (SELECT max(x.engage_date) FROM image AS x))
    )
    SELECT c.opportunity_id, c.n, c.txid, c.change_id, c.changed_at, c.window_start, c.moves_in_or_out,
           -- the deal is there after the event, storable (NULL: as before, below)
           CASE WHEN c.n = c.events THEN r.opportunity_id IS NOT NULL
                WHEN c.moves IS NOT NULL THEN c.moves[array_upper(c.moves, 1)] > 0
                WHEN NOT c.moves_in_or_out THEN true
           END AND coalesce(r.storable, false) AS present,
           r.deal_stage_key, r.is_closed, r.is_won, r.sales_agent_key, r.product_key, r.product_id,
           r.account_key, r.close_value, r.engage_date_key, r.close_date_key
      FROM chained AS c
      LEFT JOIN resolved AS r ON r.opportunity_id = c.opportunity_id AND r.n = c.n;
    GET DIAGNOSTICS v_in = ROW_COUNT;

    -- A deal the window only moved between the CRM's two tables (archived or
    -- brought back as it was: a delete and an insert of the same row in one
    -- transaction) changes nothing here. At the first archiving over a
    -- two-year horizon that is millions of deals, each of which the path
    -- below would give its seed copy and two rows of summary deltas that
    -- cancel (measured at scale 1000: 190 µs a deal, a third of the run). Left
    -- out when it is certain: the deal has no row of its own yet (its history
    -- is its seed, made from its fact), every event leaves it present with
    -- what its seed's current row and its fact already hold (tracked
    -- attributes, and the version and dates the seed is made from, so the
    -- fact step's rewrite leaves the seed as it is), and no event precedes
    -- that row (a late commit takes the whole path). Only a deal with an
    -- insert or a delete in the window is looked at: the rest, most of an
    -- everyday window, take the path below without a second seed lookup.
    -- (The warehouse's tables are read for the deals as an array, apart from
    -- the temporary table, here and below: on Citus they are distributed, and
    -- a statement joins them with no local table.)
    v_keys := ARRAY(SELECT DISTINCT m.opportunity_id FROM deal_event AS m WHERE m.moves_in_or_out);
    WITH unseen AS MATERIALIZED (
        SELECT s.* FROM dwh.deal_history_seed AS s
         WHERE s.opportunity_id = ANY (v_keys) AND s.valid_to = 'infinity'
           AND NOT EXISTS (SELECT 1 FROM dwh.fact_deal_history AS h
                            WHERE md5(h.opportunity_id) = md5(s.opportunity_id)
                              AND h.opportunity_id = s.opportunity_id)
    )
    DELETE FROM deal_event AS e
     USING (
        SELECT x.opportunity_id
          FROM deal_event AS x
          JOIN unseen AS s ON s.opportunity_id = x.opportunity_id
         GROUP BY x.opportunity_id
        HAVING bool_and(x.present IS NOT FALSE AND x.changed_at >= s.valid_from
                        AND (x.deal_stage_key, x.sales_agent_key, x.product_key, x.account_key,
                             x.close_value, x.engage_date_key, x.close_date_key)
                            IS NOT DISTINCT FROM
                            (s.deal_stage_key, s.sales_agent_key, s.product_key, s.account_key,
                             s.close_value, s.engage_date_key, s.close_date_key))
     ) AS unchanged
     WHERE e.opportunity_id = unchanged.opportunity_id;
    ANALYZE deal_event;

    -- The touched deals' history before the window (out of the summaries),
    -- then their seed copied into the table on their first touch. The deals
    -- go as one array (= ANY: an index scan; as a join, the planner scanned
    -- every fact).
    v_keys := ARRAY(SELECT DISTINCT e.opportunity_id FROM deal_event AS e);
    v_key_md5s := ARRAY(SELECT md5(k.k) FROM unnest(v_keys) AS k (k));
    CREATE TEMPORARY TABLE deal_history_rows ON COMMIT DROP AS
    SELECT -1 AS sign, h.*, NULL::smallint [] AS later_stages
      FROM dwh.fact_deal_history AS h
     WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = ANY (v_keys);
    WITH seed AS MATERIALIZED (SELECT s.* FROM dwh.deal_history_seed AS s WHERE s.opportunity_id = ANY (v_keys))
    INSERT INTO deal_history_rows
    SELECT -1, s.* FROM seed AS s
     WHERE NOT EXISTS (SELECT 1 FROM deal_history_rows AS t WHERE t.opportunity_id = s.opportunity_id);
    ANALYZE deal_history_rows;
    -- An event whose inserts and deletes net out, with no earlier move in the
    -- window, leaves the deal as it was: for a first event, there when a row
    -- of it reaches its time (valid_to: a row this window closed at that
    -- event on an earlier attempt counts too, and so does a seed row starting
    -- later, at the snapshot time).
    UPDATE deal_event AS e
       SET present = EXISTS (SELECT 1 FROM deal_history_rows AS h
                              WHERE h.opportunity_id = e.opportunity_id AND h.valid_to >= e.window_start)
     WHERE e.present IS NULL AND e.n = 1;
    UPDATE deal_event AS e
       SET present = coalesce((SELECT p.present FROM deal_event AS p
                                WHERE p.opportunity_id = e.opportunity_id AND p.n < e.n
                                  AND p.present IS NOT NULL
                                ORDER BY p.n DESC LIMIT 1), false)
     WHERE e.present IS NULL;
    WITH copied AS MATERIALIZED (SELECT r.* FROM deal_history_rows AS r WHERE r.later_stages IS NOT NULL)
    INSERT INTO dwh.fact_deal_history (
        opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, product_key,
        account_key, close_value, engage_date_key, close_date_key, is_closed, is_won,
        entered_stage, run_id
    )
    SELECT r.opportunity_id, r.valid_from, r.valid_to, r.deal_stage_key, r.sales_agent_key, r.product_key,
           r.account_key, r.close_value, r.engage_date_key, r.close_date_key, r.is_closed, r.is_won,
           r.entered_stage, r.run_id
      FROM copied AS r;

    -- Each event with the state before it: the previous event's, or for the
    -- first, the row in effect at its time (its own copy when the window is
    -- applied again: then it changes nothing), else the deal's next row.
    -- Only the events that change something are kept.
    CREATE TEMPORARY TABLE deal_change ON COMMIT DROP AS
    -- each deal's first event: the row in effect at it, else the first one
    -- after it (a seed row from the snapshot time, which a transaction that
    -- committed after the snapshot may precede). The deals' rows are those of
    -- deal_history_rows now (their rows before the window, the seeds just
    -- copied among them): read there, not from the table again; a hash join,
    -- where a lateral lookup would scan them for every event
    WITH first_row AS (
        SELECT DISTINCT ON (e.opportunity_id) t.*
          FROM deal_event AS e
          JOIN deal_history_rows AS t ON t.opportunity_id = e.opportunity_id AND t.valid_to > e.changed_at
         WHERE e.n = 1
         ORDER BY e.opportunity_id, t.valid_from
    ),
    stated AS (
        SELECT e.*,
               CASE WHEN e.n = 1 THEN b.opportunity_id IS NOT NULL ELSE lag(e.present) OVER w END
                   AS present_before,
               CASE WHEN e.n = 1 THEN b.deal_stage_key ELSE lag(e.deal_stage_key) OVER w END AS stage_before,
               CASE WHEN e.n = 1 THEN b.sales_agent_key ELSE lag(e.sales_agent_key) OVER w END AS agent_before,
               CASE WHEN e.n = 1 THEN coalesce(bp.product_id, -1) ELSE lag(e.product_id) OVER w END
                   AS product_before,
               CASE WHEN e.n = 1 THEN b.account_key ELSE lag(e.account_key) OVER w END AS account_before,
               CASE WHEN e.n = 1 THEN b.close_value ELSE lag(e.close_value) OVER w END AS value_before
          FROM deal_event AS e
          LEFT JOIN first_row AS b ON e.n = 1 AND b.opportunity_id = e.opportunity_id
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
    WITH first_change AS MATERIALIZED (
        SELECT c.opportunity_id, min(c.changed_at) AS changed_at FROM deal_change AS c GROUP BY 1
    ),
    removed AS (
        DELETE FROM dwh.fact_deal_history AS h
         USING first_change AS c
         WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = c.opportunity_id
           AND h.valid_from >= c.changed_at
        RETURNING 1
    )
    SELECT count(*) INTO v_removed FROM removed;
    WITH first_change AS MATERIALIZED (
        SELECT c.opportunity_id, min(c.changed_at) AS changed_at FROM deal_change AS c GROUP BY 1
    )
    UPDATE dwh.fact_deal_history AS h
       SET valid_to = c.changed_at, run_id = v_run.run_id
      FROM first_change AS c
     WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = c.opportunity_id
       AND h.valid_from < c.changed_at AND h.valid_to > c.changed_at;
    GET DIAGNOSTICS v_closed = ROW_COUNT;

    -- Each change that leaves the deal present is a row up to the next change.
    WITH c AS MATERIALIZED (
        SELECT d.*, lead(d.changed_at) OVER (PARTITION BY d.opportunity_id ORDER BY d.n) AS next_at
          FROM deal_change AS d
    )
    INSERT INTO dwh.fact_deal_history (
        opportunity_id, valid_from, valid_to, deal_stage_key, sales_agent_key, product_key,
        account_key, close_value, engage_date_key, close_date_key, is_closed, is_won,
        entered_stage, txid, change_id, run_id
    )
    SELECT c.opportunity_id, c.changed_at, coalesce(c.next_at, 'infinity'), c.deal_stage_key,
           c.sales_agent_key, c.product_key, c.account_key, c.close_value, c.engage_date_key,
           c.close_date_key, c.is_closed, c.is_won, c.entered_stage, c.txid, c.change_id, v_run.run_id
      FROM c
     WHERE c.present
     ORDER BY c.opportunity_id, c.changed_at;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    -- The touched deals' history after the window (into the summaries); each
    -- stage entry with the stages its deal entered later (conversion).
    INSERT INTO deal_history_rows
    SELECT 1, h.*, NULL::smallint []
      FROM dwh.fact_deal_history AS h
     WHERE md5(h.opportunity_id) = ANY (v_key_md5s) AND h.opportunity_id = ANY (v_keys);
    ANALYZE deal_history_rows;
    WITH later AS (
        SELECT e.sign, e.opportunity_id, e.valid_from,
               coalesce(array_agg(DISTINCT l.deal_stage_key) FILTER (WHERE l.deal_stage_key IS NOT NULL), '{}')
                   AS stages
          FROM deal_history_rows AS e
          LEFT JOIN deal_history_rows AS l
                 ON l.sign = e.sign AND l.opportunity_id = e.opportunity_id AND l.entered_stage
                AND l.valid_from > e.valid_from AND l.deal_stage_key <> e.deal_stage_key
         WHERE e.entered_stage
         GROUP BY e.sign, e.opportunity_id, e.valid_from
    )
    UPDATE deal_history_rows AS r
       SET later_stages = l.stages
      FROM later AS l
     WHERE r.sign = l.sign AND r.opportunity_id = l.opportunity_id AND r.valid_from = l.valid_from;
    -- A row the window left as it was is in both: its -1 and +1 cancel out,
    -- and folding neither is cheaper (most touched deals keep most rows).
    DELETE FROM deal_history_rows AS r
     USING (SELECT x.opportunity_id, x.valid_from, x.valid_to, x.deal_stage_key, x.sales_agent_key,
                   x.product_key, x.close_value, x.engage_date_key, x.close_date_key, x.entered_stage,
                   x.later_stages
              FROM deal_history_rows AS x
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
            HAVING count(*) FILTER (WHERE x.sign = 1) = 1 AND count(*) FILTER (WHERE x.sign = -1) = 1) AS same
     WHERE r.opportunity_id = same.opportunity_id AND r.valid_from = same.valid_from
       AND r.valid_to = same.valid_to AND r.deal_stage_key = same.deal_stage_key
       AND r.sales_agent_key = same.sales_agent_key AND r.product_key = same.product_key
       AND r.close_value IS NOT DISTINCT FROM same.close_value AND r.engage_date_key = same.engage_date_key
       AND r.close_date_key = same.close_date_key AND r.entered_stage = same.entered_stage
       AND r.later_stages IS NOT DISTINCT FROM same.later_stages;
    PERFORM dwh.fold_deal_history();
    DROP TABLE pg_temp.deal_history_rows;

    PERFORM etl.add_step_counts(p_loading_metadata_id, p_in => v_in, p_inserted => v_inserted,
                                p_updated => v_closed, p_deleted => v_removed);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.apply_deal_history(bigint) IS
'Unit of dwh.load_deal_history: folds the initial load''s seed into the as-of summaries, or adds one '
'row to dwh.fact_deal_history per committed transaction of the window that altered a deal''s stage, '
'agent, product, account or value, valid from its changed_at, and the summaries'' deltas; safe to apply '
'a window again.';
