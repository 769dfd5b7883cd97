-- Function: dwh.move_fact_batch(p_loading_metadata_id bigint) RETURNS text
--     Unit of dwh.move_facts_across_horizon: one batch of facts moved to the
--     part the horizon places them in (dwh.is_cold_fact). The first batch
--     of a run sets the horizon, from etl.config cold_horizon at the run's
--     start (etl.cold_horizon), in etl.fact_storage; from then on every
--     writer places facts by it. Each batch then moves up to the run's
--     batch size of hot facts the horizon makes cold (deals closed before
--     it: found by the close-date index of the hot part) and as many cold
--     facts it makes hot (a horizon set earlier than before: by the cold
--     part's close-date index), each by an UPDATE of is_cold, which
--     PostgreSQL carries out as a delete from one part and an insert into
--     the other, in the batch's transaction. A fact's content, its run_id
--     and the aggregates do not change: moving is storage only.
--     Exactly once and resumable: a batch killed is rolled back whole, and
--     the next finds what is still misplaced; a fact in its place is never
--     touched again.
-- Returns: 'more' while a batch was full, NULL when nothing is left.
-- Tables: reads etl.config, etl.run; writes etl.fact_storage,
--     dwh.fact_sales_performance, etl.loading_metadata (counts).
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
--     Refused outside its own step of the caller's running run (etl.assert_step_executor).
CREATE OR REPLACE FUNCTION dwh.move_fact_batch(p_loading_metadata_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_step etl.loading_metadata;
    v_run etl.run;
    v_cold_before date;
    v_to_cold bigint;
    v_to_hot bigint;
BEGIN
    PERFORM etl.assert_step_executor(p_loading_metadata_id, 'dwh.move_fact_batch');
    SELECT m.* INTO v_step FROM etl.loading_metadata AS m
     WHERE m.loading_metadata_id = p_loading_metadata_id;
    SELECT r.* INTO v_run FROM etl.run AS r WHERE r.run_id = v_step.run_id;

    IF v_step.resume_after IS NULL THEN
        v_cold_before := etl.cold_horizon(v_run.started_at);
        UPDATE etl.fact_storage
           SET cold_before = v_cold_before, run_id = v_run.run_id, set_at = clock_timestamp();
        IF v_cold_before IS NULL THEN
            RAISE NOTICE 'horizon move run %: no horizon (cold_horizon none): every fact is stored hot',
                v_run.run_id;
        ELSE
            RAISE NOTICE 'horizon move run %: facts of deals closed before % are stored cold', v_run.run_id,
                v_cold_before;
        END IF;
    ELSE
        SELECT s.cold_before INTO v_cold_before FROM etl.fact_storage AS s;
    END IF;

    WITH misplaced AS (
        (SELECT f.opportunity_id, true AS to_cold
           FROM dwh.fact_sales_performance AS f
          WHERE NOT f.is_cold AND dwh.is_cold_fact(f.is_closed, f.close_date_key, v_cold_before)
          LIMIT v_run.batch_size)
        UNION ALL
        (SELECT f.opportunity_id, false
           FROM dwh.fact_sales_performance AS f
          WHERE f.is_cold AND NOT dwh.is_cold_fact(f.is_closed, f.close_date_key, v_cold_before)
          LIMIT v_run.batch_size)
    ),
    moved AS (
        UPDATE dwh.fact_sales_performance AS f
           SET is_cold = m.to_cold
          FROM misplaced AS m
         WHERE f.opportunity_id = m.opportunity_id AND f.is_cold <> m.to_cold
        RETURNING f.is_cold
    )
    SELECT count(*) FILTER (WHERE m.is_cold), count(*) FILTER (WHERE NOT m.is_cold)
      INTO v_to_cold, v_to_hot
      FROM moved AS m;

    RAISE NOTICE 'horizon move run %: % facts to the cold part, % to the hot part', v_run.run_id,
        v_to_cold, v_to_hot;
    PERFORM etl.add_step_counts(
        p_loading_metadata_id,
        p_in => v_to_cold + v_to_hot,
        p_updated => v_to_cold + v_to_hot,
        p_resume_after => coalesce(v_cold_before::text, 'none')
    );
    IF v_to_cold >= v_run.batch_size OR v_to_hot >= v_run.batch_size THEN
        RETURN 'more';
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION dwh.move_fact_batch(bigint) IS
'Unit of dwh.move_facts_across_horizon: sets the horizon from etl.config cold_horizon (first batch), '
'then moves one batch of facts to the part it places them in (hot to cold, cold to hot).';
