-- Function: dwh.insert_fact_batch(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.load_fact_sales_performance: one batch of staged
--     opportunities (the whole source in an initial load, the deals a window
--     changed in an incremental update), taken as a range of the staging
--     table's heap blocks (a TID range scan: no sort, no index), sized to
--     the run's batch size; on Citus, a range of hashtext(opportunity_id)
--     (the coordinator's staging is empty, its rows are in the shards),
--     sized by the staging's estimated rows as blocks are. The last batch
--     checks that the batches read every staged deal. The batch is resolved
--     once into etl.fact_batch:
--       - hard rule (quarantined in etl.error_log with the record and the
--         reason, not loaded): a close value no column can hold (beyond
--         numeric(18, 2), infinite, or NaN, which would poison every sum
--         of the aggregate and its exact deltas);
--       - every dimension key, Unknown (-1) for a missing or unresolved
--         reference, never dropped (the contract): a stage resolves by its
--         name, then by dwh.deal_stage_match_key (trimmed, case-folded, as
--         the CSV importer matches names); one that still does not is the
--         Unknown stage (-1: neither closed nor won). A date outside the
--         calendar (date_min .. date_max) is the Unknown date (-1); for the
--         product version it counts as no engage date;
--       - soft rules (loaded, listed in etl.data_quality_issue, the detail
--         naming the value where the rule alone does not): close date before
--         engage date, Won without a value, a negative value, a closed deal
--         without a close date, fractions of a cent (stored rounded), a stage
--         read only once trimmed and case-folded, an unknown stage, a date
--         outside the calendar, a close value above max_close_value (loaded
--         as is), a close date beyond close_date_horizon after the run's
--         start (loaded: the fact keeps the CRM's date, dim_date reaches it
--         within date_max), a closed deal without an account (an open one
--         without is normal);
--       - the product key is the version in effect at the engage date, the
--         latest one without an engage date (dwh.product_version_lookup);
--       - a deal the CRM archived (staged from its archive) is a live fact
--         like any, with its archived_at; one brought back loses it.
--     A fact is stored in the hot or the cold part of the table, where
--     dwh.is_cold_fact places it by the horizon in etl.fact_storage (an
--     initial load sets it from etl.config cold_horizon at the run's start;
--     a horizon move run changes it).
--     An initial load fills an empty table: the first batch sets its keys,
--     foreign keys and indexes aside (etl.suspend_ddl), the last puts them
--     back (etl.restore_ddl). An incremental update rewrites the facts of
--     the batch's deals in place and inserts the new ones (a quarantined
--     deal's fact is retired: is_deleted),
--     first marks the window's deleted deals deleted and moves the deals
--     engaged in the period of a product version this run wrote onto it
--     (below), and adds what the old facts took from and the new ones give
--     to each group of the aggregate and of the summaries to the pending
--     deltas (etl.touched_group, etl.touched_*: dwh.fold_fact_contributions).
--     A contribution carries every key and measure a summary needs, and
--     whether the fact was live (a deleted one counts nowhere).
--     Moving deals to a new product version lives here, not in
--     dwh.load_dim_product: a move changes facts and the aggregate groups
--     they count in, and this step is the one that records every such
--     change as contributions (old out, new in) folded into the pending
--     deltas; one mechanism, in the transaction of the first batch, after
--     the dimension steps wrote the run's versions (dim_product.run_id).
--     Only deals whose engage date falls in a version's period move (a new
--     version starts at its change's time, so these are the deals engaged
--     since, mostly in the future); dwh.facts_off_their_version finds them
--     through the open-deals and close-date indexes, so the cost follows
--     the deals engaged or closed since the window's changes. A deal
--     without (or with an unknown) engage date keeps its version until the
--     deal itself changes.
-- Returns: 'more' while blocks remain, NULL when done.
-- Tables: reads etl.stage_sales_pipeline, etl.stage_deleted, dwh dimensions,
--     etl.config; writes etl.fact_storage (initial load), etl.fact_batch, dwh.fact_sales_performance,
--     etl.error_log, etl.data_quality_issue, etl.fact_contribution, etl.touched_group,
--     etl.touched_product, etl.touched_account, etl.touched_account_day, etl.touched_open_day,
--     etl.loading_metadata (counts and resume_after, with the batch).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.insert_fact_batch(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_step etl.loading_metadata;
    v_run etl.run;
    v_incremental boolean;
    v_min date := etl.config_value('date_min')::date;
    v_max date := etl.config_value('date_max')::date;
    v_max_value numeric := etl.config_value('max_close_value')::numeric;
    v_horizon date;
    v_cold_before date;
    -- A batch is a range of positions in [0, v_end): heap blocks of the
    -- staging on one server; on Citus, where the staging is distributed and
    -- the coordinator's table is empty, values of hashtext(opportunity_id)
    -- (shifted to start at 0), which every shard filters by. The batch's
    -- condition below folds to the one that applies in a plan made for the
    -- bounds, which PL/pgSQL makes for each batch: a plan for any bounds
    -- would scan the whole staging and costs more, so it is never chosen.
    -- (Not plan_cache_mode = force_custom_plan on the function: it reaches
    -- the foreign keys' checks, planned again for every row written: the
    -- fact step of 10,000 changes took 1.4 s against 0.9 s.)
    v_distributed boolean := etl.is_distributed('etl.stage_sales_pipeline');
    v_end bigint;
    v_per_batch bigint;
    v_staged bigint;
    v_first_block tid;
    v_last_block tid;
    v_first_hash integer;
    v_last_hash integer;
    v_first bigint;
    v_last bigint;
    v_loaded bigint;
    v_quarantined bigint;
    v_deleted bigint := 0;
    v_replaced bigint := 0;
    v_moved bigint := 0;
    v_first_engaged date;
    v_last_engaged date;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.insert_fact_batch');
    SELECT m.* INTO v_step FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT r.* INTO v_run FROM etl.run AS r WHERE r.run_id = v_step.run_id;
    v_incremental := v_run.pipeline = 'incremental_update';
    -- The horizon follows the run's start: every batch of a run, and a resumed
    -- one, judges by the same day.
    v_horizon := (v_run.started_at::date + etl.config_value('close_date_horizon')::interval)::date;
    v_first := coalesce(v_step.resume_after::bigint, 0);
    IF v_distributed THEN
        -- (the estimate, as blocks hold their rows by it below: the staging is
        -- analysed when it is filled, and a count would read it every batch)
        v_end := 4294967296;
        v_per_batch := ceil(v_end::numeric * v_run.batch_size
                            / greatest(etl.estimated_rows('etl.stage_sales_pipeline'), 1))::bigint;
    ELSE
        v_end := pg_relation_size('etl.stage_sales_pipeline') / current_setting('block_size')::bigint;
        SELECT greatest(1, floor(v_run.batch_size
                                 / greatest(CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages ELSE 100 END,
                                            1)))::bigint
          INTO v_per_batch
          FROM pg_class AS c WHERE c.oid = 'etl.stage_sales_pipeline'::regclass;
    END IF;
    v_last := least(v_first + v_per_batch, v_end);
    IF v_distributed THEN
        v_first_hash := (v_first - 2147483648)::integer;
        v_last_hash := (v_last - 1 - 2147483648)::integer;
    ELSE
        v_first_block := ('(' || v_first || ',0)')::tid;
        v_last_block := ('(' || v_last || ',0)')::tid;
    END IF;
    IF v_end < v_first THEN
        RAISE EXCEPTION 'the stage of run % is shorter than where its fact step stopped', v_run.run_id
            USING ERRCODE = '55000', HINT = 'Start the run again.';
    END IF;

    -- Where the facts go (dwh.is_cold_fact): an initial load places them by
    -- the horizon etl.config sets at its start; every later write by the
    -- one in force (a horizon move sets a new one).
    IF v_first = 0 AND NOT v_incremental THEN
        UPDATE etl.fact_storage
           SET cold_before = etl.cold_horizon(v_run.started_at), run_id = v_run.run_id,
               set_at = clock_timestamp();
    END IF;
    SELECT s.cold_before INTO v_cold_before FROM etl.fact_storage AS s;

    TRUNCATE etl.fact_contribution;
    IF v_first = 0 AND v_incremental THEN
        -- Deals deleted in the source: marked, never erased.
        WITH retired AS (
            UPDATE dwh.fact_sales_performance AS f
               SET is_deleted = true, run_id = v_run.run_id
              FROM etl.stage_deleted AS d
             WHERE d.table_name = 'sales_pipeline' AND f.opportunity_id = d.row_key
               AND NOT f.is_deleted
            RETURNING -1, f.close_month_key, f.sales_agent_key, f.product_key, f.is_closed, f.is_won,
                      f.close_value, f.account_key, f.deal_stage_key, f.engage_date_key, f.close_date_key,
                      f.list_price, f.days_to_close, true
        ),
        taken AS (INSERT INTO etl.fact_contribution SELECT * FROM retired)
        SELECT count(*) INTO v_deleted FROM retired;

        -- Deals engaged in the period of a product version this run wrote,
        -- on another version of the product, move onto it: old contribution
        -- out, new in (dwh.facts_off_their_version finds them).
        -- The old list price, read before the update, goes out with the old key.
        WITH misplaced AS (
            SELECT m.opportunity_id, m.old_key, m.new_key, m.list_price AS sales_price,
                   o.list_price AS old_price
              FROM dwh.facts_off_their_version(v_run.run_id) AS m
              JOIN dwh.fact_sales_performance AS o ON o.opportunity_id = m.opportunity_id
        ),
        moved AS (
            UPDATE dwh.fact_sales_performance AS f
               SET product_key = m.new_key, list_price = m.sales_price, run_id = v_run.run_id
              FROM misplaced AS m
             WHERE f.opportunity_id = m.opportunity_id
            RETURNING m.old_key, m.old_price, f.close_month_key, f.sales_agent_key, f.product_key,
                      f.is_closed, f.is_won, f.close_value, f.account_key, f.deal_stage_key,
                      f.engage_date_key, f.close_date_key, f.list_price, f.days_to_close,
                      NOT f.is_deleted AS is_live
        ),
        taken AS (
            INSERT INTO etl.fact_contribution
            SELECT -1, m.close_month_key, m.sales_agent_key, m.old_key, m.is_closed, m.is_won, m.close_value,
                   m.account_key, m.deal_stage_key, m.engage_date_key, m.close_date_key, m.old_price,
                   m.days_to_close, m.is_live
              FROM moved AS m
            UNION ALL
            SELECT 1, m.close_month_key, m.sales_agent_key, m.product_key, m.is_closed, m.is_won, m.close_value,
                   m.account_key, m.deal_stage_key, m.engage_date_key, m.close_date_key, m.list_price,
                   m.days_to_close, m.is_live
              FROM moved AS m
        )
        SELECT count(*) INTO v_moved FROM moved;
    ELSIF v_first = 0 AND NOT EXISTS (SELECT 1 FROM dwh.fact_sales_performance) THEN
        -- A rebuild fills an empty table: set its keys, foreign keys and
        -- indexes aside for the load, and put them back with the last batch.
        PERFORM etl.suspend_ddl('dwh.fact_sales_performance');
    END IF;

    -- The batch's engage dates bound the product versions it can meet:
    -- those whose period overlaps them, and the latest (deals without a date
    -- in the calendar). Redundant with the join's own condition, this keeps
    -- its cost from growing with every price change ever made (the join
    -- compares each deal with every version of its product it is given: at
    -- scale 1000 with 2,200 versions of 7 products, 332 ms of a window of
    -- 6,500 deals, most of whose dates fall in one version). The history
    -- step bounds its window's lookup the same way (dwh.apply_deal_history).
    SELECT min(s.engage_date), max(s.engage_date)
      INTO v_first_engaged, v_last_engaged
      FROM etl.stage_sales_pipeline AS s
     WHERE (v_first_block IS NULL OR s.ctid >= v_first_block AND s.ctid < v_last_block)
       AND (v_first_hash IS NULL OR hashtext(s.opportunity_id) BETWEEN v_first_hash AND v_last_hash)
       AND s.engage_date BETWEEN v_min AND v_max;

    TRUNCATE etl.fact_batch;
    INSERT INTO etl.fact_batch
    SELECT s.*,
           CASE
               WHEN s.close_value = 'NaN'::numeric
                   THEN 'close_value NaN cannot be stored (not a number: it would poison every sum)'
               WHEN abs(round(s.close_value, 2)) >= 1e16
                   THEN format('close_value %s cannot be stored (numeric(18, 2) holds less than 1e16)',
                               s.close_value)
           END,
           array_remove(ARRAY[
               CASE WHEN s.close_date < s.engage_date AND s.close_date >= v_min AND s.engage_date <= v_max
                   THEN 'close date before engage date' END,
               CASE WHEN st.is_won AND s.close_value IS NULL THEN 'won deal without a close value' END,
               CASE WHEN s.close_value < 0 THEN 'negative close value' END,
               CASE WHEN st.is_closed AND s.close_date IS NULL THEN 'closed deal without a close date' END,
               CASE WHEN s.close_value <> round(s.close_value, 2) THEN 'close value rounded to cents' END,
               CASE WHEN exact.deal_stage_key IS NULL AND folded.deal_stage_key IS NOT NULL
                   THEN 'deal stage read once trimmed and case-folded' END,
               CASE WHEN st.deal_stage_key = -1 THEN 'unknown deal stage' END,
               CASE WHEN s.engage_date NOT BETWEEN v_min AND v_max THEN 'engage date outside the calendar' END,
               CASE WHEN s.close_date NOT BETWEEN v_min AND v_max THEN 'close date outside the calendar' END,
               CASE WHEN abs(s.close_value) > v_max_value THEN 'close value above max_close_value' END,
               CASE WHEN s.close_date > v_horizon AND s.close_date <= v_max
                   THEN 'close date far in the future' END,
               CASE WHEN st.is_closed AND a.account_key IS NULL THEN 'closed deal without an account' END
           ], NULL),
           coalesce(a.account_key, -1),
           coalesce(v.product_key, -1),
           coalesce(g.sales_agent_key, -1),
           st.deal_stage_key,
           v.sales_price,
           st.is_won,
           st.is_closed,
           false,
           -- what the fact writes of its dates, once: the keys (a date outside
           -- the calendar is unknown, -1) and the days between them
           dwh.date_key(c.engage_date),
           dwh.date_key(c.close_date),
           c.close_date - c.engage_date
      FROM etl.stage_sales_pipeline AS s
      CROSS JOIN LATERAL (
          SELECT CASE WHEN s.engage_date BETWEEN v_min AND v_max THEN s.engage_date END AS engage_date,
                 CASE WHEN s.close_date BETWEEN v_min AND v_max THEN s.close_date END AS close_date
      ) AS c
      -- The stage by its name; only a name that misses is folded (the
      -- folding costs more than the whole join).
      LEFT JOIN dwh.dim_deal_stage AS exact
             ON exact.deal_stage_name = s.deal_stage AND exact.deal_stage_key <> -1
      LEFT JOIN dwh.dim_deal_stage AS folded
             ON dwh.deal_stage_match_key(folded.deal_stage_name)
                = CASE WHEN exact.deal_stage_key IS NULL THEN dwh.deal_stage_match_key(s.deal_stage) END
            AND folded.deal_stage_key <> -1
      CROSS JOIN LATERAL (
          SELECT coalesce(exact.deal_stage_key, folded.deal_stage_key, -1)::smallint AS deal_stage_key,
                 coalesce(exact.is_won, folded.is_won, false) AS is_won,
                 coalesce(exact.is_closed, folded.is_closed, false) AS is_closed
      ) AS st
      LEFT JOIN dwh.dim_account AS a ON a.account_id = s.account_id
      LEFT JOIN dwh.dim_sales_agent AS g ON g.sales_agent_id = s.sales_agent_id
      -- A date outside the calendar is unknown to the warehouse: no engage date.
      LEFT JOIN dwh.product_version_lookup AS v
             ON v.product_id = s.product_id
            AND CASE WHEN s.engage_date BETWEEN v_min AND v_max
                     THEN s.engage_date >= v.lookup_first_day AND s.engage_date < v.lookup_before_day
                     ELSE v.is_latest
                END
            AND (v.is_latest OR v.lookup_before_day > v_first_engaged AND v.lookup_first_day <= v_last_engaged)
     WHERE (v_first_block IS NULL OR s.ctid >= v_first_block AND s.ctid < v_last_block)
       AND (v_first_hash IS NULL OR hashtext(s.opportunity_id) BETWEEN v_first_hash AND v_last_hash);

    INSERT INTO etl.error_log (run_id, procedure_name, kind, message, table_name, business_key, record)
    SELECT v_run.run_id, 'dwh.load_fact_sales_performance', 'quarantine', b.hard_reason,
           'sales_pipeline', b.opportunity_id,
           jsonb_build_object(
               'opportunity_id', b.opportunity_id, 'sales_agent_id', b.sales_agent_id,
               'product_id', b.product_id, 'account_id', b.account_id, 'deal_stage', b.deal_stage,
               'engage_date', b.engage_date, 'close_date', b.close_date, 'close_value', b.close_value)
      FROM etl.fact_batch AS b
     WHERE b.hard_reason IS NOT NULL;
    GET DIAGNOSTICS v_quarantined = ROW_COUNT;

    -- (the detail a column of a derived table, not a lateral subquery of its
    -- own: Citus pushes the first down to the batch's shards, not the second)
    INSERT INTO etl.data_quality_issue (run_id, table_name, business_key, rule, record)
    SELECT v_run.run_id, 'sales_pipeline', i.opportunity_id, i.rule,
           i.record || CASE WHEN i.detail IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('detail', i.detail) END
      FROM (
          SELECT b.opportunity_id, r.rule,
                 jsonb_build_object(
                     'opportunity_id', b.opportunity_id, 'deal_stage', b.deal_stage,
                     'engage_date', b.engage_date, 'close_date', b.close_date,
                     'close_value', b.close_value) AS record,
                 CASE r.rule
                     WHEN 'deal stage read once trimmed and case-folded'
                         THEN format('deal stage %L read as %L', b.deal_stage, st.deal_stage_name)
                     WHEN 'unknown deal stage'
                         THEN format('deal stage %s does not resolve (trimmed and case-folded): Unknown stage',
                                     coalesce(quote_literal(b.deal_stage), 'NULL'))
                     WHEN 'engage date outside the calendar'
                         THEN format('engage_date %s outside the calendar %s .. %s: Unknown date',
                                     b.engage_date, v_min, v_max)
                     WHEN 'close date outside the calendar'
                         THEN format('close_date %s outside the calendar %s .. %s: Unknown date',
                                     b.close_date, v_min, v_max)
                     WHEN 'close value above max_close_value'
                         THEN format('close_value %s above max_close_value %s: loaded as is',
                                     b.close_value, v_max_value)
                     WHEN 'close date far in the future'
                         THEN format('close_date %s beyond %s (the run''s start + close_date_horizon): loaded',
                                     b.close_date, v_horizon)
                     WHEN 'closed deal without an account'
                         THEN format('%s deal with account_id %s: Unknown account', st.deal_stage_name,
                                     coalesce(b.account_id::text, 'NULL'))
                 END AS detail
            FROM etl.fact_batch AS b
           CROSS JOIN LATERAL unnest(b.soft_rules) AS r (rule)
            LEFT JOIN dwh.dim_deal_stage AS st ON st.deal_stage_key = b.deal_stage_key
           WHERE b.hard_reason IS NULL AND cardinality(b.soft_rules) > 0
      ) AS i;

    IF v_incremental THEN
        -- A quarantined deal retires its fact.
        WITH retired AS (
            UPDATE dwh.fact_sales_performance AS f
               SET is_deleted = true, run_id = v_run.run_id
              FROM etl.fact_batch AS b
             WHERE f.opportunity_id = b.opportunity_id AND b.hard_reason IS NOT NULL
               AND NOT f.is_deleted
            RETURNING -1, f.close_month_key, f.sales_agent_key, f.product_key, f.is_closed, f.is_won,
                      f.close_value, f.account_key, f.deal_stage_key, f.engage_date_key, f.close_date_key,
                      f.list_price, f.days_to_close, true
        )
        INSERT INTO etl.fact_contribution SELECT * FROM retired;

        -- A deal with a fact gets it rewritten in place: an UPDATE, not a
        -- DELETE and an INSERT, because PostgreSQL checks a foreign key on
        -- update only when its column changed (a stage change checks one
        -- key, an insert all seven; measured at scale 1000: about a third of
        -- the step). The old image, joined in as o (the statement's
        -- snapshot), is what the fact took from its groups; the new one what
        -- it gives. The fact is found in whichever part holds it, and goes
        -- where the horizon places it now (a deal reopened or closed long
        -- ago moves: an UPDATE of is_cold). The batch notes which deals had
        -- a fact (has_fact): the insert below takes the others.
        WITH rewritten AS (
            UPDATE dwh.fact_sales_performance AS f
               SET account_key = b.account_key, product_key = b.product_key,
                   sales_agent_key = b.sales_agent_key, deal_stage_key = b.deal_stage_key,
                   engage_date_key = b.engage_date_key, close_date_key = b.close_date_key,
                   close_value = b.close_value, list_price = b.list_price, is_won = b.is_won,
                   is_closed = b.is_closed, days_to_close = b.days_to_close,
                   is_deleted = false, archived_at = b.archived_at, run_id = v_run.run_id,
                   is_cold = dwh.is_cold_fact(b.is_closed, b.close_date_key, v_cold_before)
              FROM etl.fact_batch AS b
              JOIN dwh.fact_sales_performance AS o ON o.opportunity_id = b.opportunity_id
             WHERE f.opportunity_id = b.opportunity_id AND b.hard_reason IS NULL
            RETURNING f.opportunity_id, o.close_month_key AS old_month, o.sales_agent_key AS old_agent,
                      o.product_key AS old_product, o.is_closed AS old_closed, o.is_won AS old_won,
                      o.close_value AS old_value, o.account_key AS old_account,
                      o.deal_stage_key AS old_stage, o.engage_date_key AS old_engage,
                      o.close_date_key AS old_close, o.list_price AS old_price,
                      o.days_to_close AS old_days, NOT o.is_deleted AS old_live,
                      f.close_month_key, f.sales_agent_key, f.product_key, f.is_closed, f.is_won,
                      f.close_value, f.account_key, f.deal_stage_key, f.engage_date_key, f.close_date_key,
                      f.list_price, f.days_to_close
        ),
        -- A fact rewritten with what it had (a deal the CRM archived: only
        -- archived_at changes) gives back what it takes: no contribution, no
        -- group to refresh.
        changed AS (
            SELECT r.* FROM rewritten AS r
             WHERE (r.old_month, r.old_agent, r.old_product, r.old_closed, r.old_won, r.old_value,
                    r.old_account, r.old_stage, r.old_engage, r.old_close, r.old_price, r.old_days, r.old_live)
                   IS DISTINCT FROM
                   (r.close_month_key, r.sales_agent_key, r.product_key, r.is_closed, r.is_won, r.close_value,
                    r.account_key, r.deal_stage_key, r.engage_date_key, r.close_date_key, r.list_price,
                    r.days_to_close, true)
        ),
        taken AS (
            INSERT INTO etl.fact_contribution
            SELECT -1, r.old_month, r.old_agent, r.old_product, r.old_closed, r.old_won, r.old_value,
                   r.old_account, r.old_stage, r.old_engage, r.old_close, r.old_price, r.old_days, r.old_live
              FROM changed AS r
            UNION ALL
            SELECT 1, r.close_month_key, r.sales_agent_key, r.product_key, r.is_closed, r.is_won,
                   r.close_value, r.account_key, r.deal_stage_key, r.engage_date_key, r.close_date_key,
                   r.list_price, r.days_to_close, true
              FROM changed AS r
        ),
        marked AS (
            UPDATE etl.fact_batch AS b SET has_fact = true
              FROM rewritten AS r
             WHERE b.opportunity_id = r.opportunity_id
        )
        SELECT count(*) INTO v_replaced FROM rewritten;
    END IF;

    -- The deals without a fact, placed by the horizon. Not ON CONFLICT: a
    -- partitioned table's key holds within a part only, and a deal's fact
    -- may be in the other; not NOT EXISTS: behind the initial load's switch
    -- the planner hashed the whole fact table for it (0.6 s a run at scale
    -- 100). The rewrite above marked the deals it found (has_fact).
    WITH loaded AS (
        INSERT INTO dwh.fact_sales_performance (
            opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,
            engage_date_key, close_date_key, close_value, list_price, is_won, is_closed,
            days_to_close, is_deleted, archived_at, run_id, is_cold
        )
        SELECT b.opportunity_id, b.account_key, b.product_key, b.sales_agent_key, b.deal_stage_key,
               b.engage_date_key, b.close_date_key, b.close_value, b.list_price,
               b.is_won, b.is_closed, b.days_to_close, false, b.archived_at, v_run.run_id,
               -- a column, not an expression, for the rule: so it is inlined (a parameter
               -- used twice with an expression for it is not; measured: 3x the insert)
               dwh.is_cold_fact(b.is_closed, b.close_date_key, v_cold_before)
          FROM etl.fact_batch AS b
         WHERE b.hard_reason IS NULL AND NOT b.has_fact
        RETURNING 1, close_month_key, sales_agent_key, product_key, is_closed, is_won, close_value,
                  account_key, deal_stage_key, engage_date_key, close_date_key, list_price, days_to_close,
                  true
    ),
    added AS (INSERT INTO etl.fact_contribution SELECT * FROM loaded WHERE v_incremental)
    SELECT count(*) + v_replaced INTO v_loaded FROM loaded;

    IF v_incremental THEN
        PERFORM dwh.fold_fact_contributions();
    END IF;

    PERFORM etl.add_step_counts(
        p_loading_metadata_id,
        p_in => v_loaded + v_quarantined,
        p_inserted => v_loaded - v_replaced,
        p_updated => v_replaced + v_moved,
        p_deleted => v_deleted,
        p_rejected => v_quarantined,
        p_resume_after => v_last::text
    );
    IF v_last < v_end THEN
        RETURN 'more';
    END IF;
    -- Every staged deal is loaded or quarantined, counted in the step's rows
    -- in: a batch that read fewer rows than it was meant to (positions that
    -- miss rows) fails the step rather than report success.
    SELECT m.rows_in INTO v_loaded FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT count(*) INTO v_staged FROM etl.stage_sales_pipeline;
    IF v_loaded <> v_staged THEN
        RAISE EXCEPTION 'dwh.fact_sales_performance: the fact step read % of the % staged deals', v_loaded, v_staged
            USING ERRCODE = 'XX000',
                  DETAIL = 'Its batches are meant to cover the staging once; every deal is loaded or quarantined.',
                  HINT = 'A fault of the warehouse''s code: report it. The run can be started again.';
    END IF;
    IF EXISTS (SELECT 1 FROM etl.suspended_ddl AS s
                WHERE s.table_name = 'dwh.fact_sales_performance'::regclass) THEN
        PERFORM etl.restore_ddl('dwh.fact_sales_performance');
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.insert_fact_batch(bigint) IS
'Unit of dwh.load_fact_sales_performance: resolves one batch of staged deals (keys, Unknown (-1) for '
'what does not resolve; values no column holds quarantined in etl.error_log; issues in '
'etl.data_quality_issue), writes its facts, and moves deals engaged in a product version the run wrote.';
