"""The initial load as a DBA runs it (CALL etl.run_initial_load() in psql):
reconciliation with the source, dirty data, interruption and re-runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import citus, generate

SCALE = 0.2
# The initial load's steps after etl.start_run, in order.
STEPS = list(wc.INITIAL_STEPS)

# The warehouse's content, without lineage columns that differ between runs.
STATE_QUERIES = {
    "dim_account": """SELECT account_key, account_id, account_name, sector, year_established,
                             revenue, employees, office_location, parent_account_id, is_deleted
                        FROM dwh.dim_account ORDER BY account_key""",
    "dim_sales_agent": """SELECT sales_agent_key, sales_agent_id, sales_agent_name, manager_name,
                                 regional_office, is_deleted
                            FROM dwh.dim_sales_agent ORDER BY sales_agent_key""",
    "dim_product": """SELECT product_key, product_id, product_name, series, sales_price,
                             valid_from, valid_to, is_current, is_deleted
                        FROM dwh.dim_product ORDER BY product_key""",
    "dim_date": "SELECT * FROM dwh.dim_date ORDER BY date_key",
    "fact": """SELECT opportunity_id, account_key, product_key, sales_agent_key, deal_stage_key,
                      engage_date_key, close_date_key, close_value, list_price, is_won, is_closed,
                      days_to_close, is_deleted
                 FROM dwh.fact_sales_performance ORDER BY opportunity_id""",
    "aggregate": """SELECT month_date_key, sales_agent_key, product_key, won_deals, lost_deals,
                           won_value
                      FROM dwh.fact_sales_monthly_aggregate ORDER BY 1, 2, 3""",
}


def warehouse_state(dsn: str) -> dict[str, str]:
    """An md5 per table of the warehouse's content: equal states, equal digests."""
    with psycopg.connect(dsn) as conn:
        return {
            name: conn.execute(
                # (the order in the aggregate: Citus does not keep a subquery's)
                "SELECT count(*) || ':'"
                " || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM ({query}) AS t"
            ).fetchone()[0]
            for name, query in STATE_QUERIES.items()
        }


call, scalar = dbtools.execute, dbtools.scalar


@pytest.fixture(scope="module")
def loaded(warehouse: dbtools.Warehouse) -> Iterator[dbtools.Warehouse]:
    """The module's warehouse after one initial load of a generated source."""
    generate.generate(warehouse.oltp_dsn, SCALE)
    call(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    yield warehouse


def test_the_load_succeeds_and_every_check_passes(loaded):
    assert scalar(loaded.olap_dsn, "SELECT status FROM etl.run ORDER BY run_id DESC LIMIT 1") == (
        "succeeded"
    )
    with psycopg.connect(loaded.olap_dsn) as conn:
        checks = conn.execute(
            "SELECT check_name, passed FROM etl.validation_result"
            " WHERE run_id = (SELECT max(run_id) FROM etl.run)"
        ).fetchall()
    assert len(checks) >= 7
    assert all(passed for _name, passed in checks), checks


def test_facts_reconcile_with_the_source_per_deal_stage(loaded):
    with psycopg.connect(loaded.oltp_dsn) as conn:
        source = conn.execute(
            "SELECT deal_stage, count(*), coalesce(sum(close_value), 0)::numeric(18, 2)"
            " FROM sales_pipeline GROUP BY 1 ORDER BY 1"
        ).fetchall()
    with psycopg.connect(loaded.olap_dsn) as conn:
        facts = conn.execute(
            "SELECT s.deal_stage_name, count(*), coalesce(sum(f.close_value), 0)"
            " FROM dwh.fact_sales_performance f JOIN dwh.dim_deal_stage s USING (deal_stage_key)"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert len(source) == 4
    assert facts == source


def test_dimensions_hold_the_source_and_unknown_members(loaded):
    for table, dim, key in [
        ("accounts", "dim_account", "account_key"),
        ("sales_agents", "dim_sales_agent", "sales_agent_key"),
        ("products", "dim_product", "product_key"),
    ]:
        source = scalar(loaded.oltp_dsn, f"SELECT count(*) FROM {table}")
        warehouse = scalar(loaded.olap_dsn, f"SELECT count(*) FROM dwh.{dim} WHERE {key} <> -1")
        assert warehouse == source, table
    # Open deals without an account point at the Unknown account.
    no_account = scalar(
        loaded.oltp_dsn, "SELECT count(*) FROM sales_pipeline WHERE account_id IS NULL"
    )
    unknown = scalar(
        loaded.olap_dsn, "SELECT count(*) FROM dwh.fact_sales_performance WHERE account_key = -1"
    )
    assert no_account > 0
    assert unknown == no_account


def test_every_step_leaves_a_trace(loaded):
    with psycopg.connect(loaded.olap_dsn) as conn:
        steps = conn.execute(
            "SELECT step, status, rows_in, finished_at >= started_at FROM etl.loading_metadata"
            " WHERE run_id = (SELECT max(run_id) FROM etl.run) ORDER BY loading_metadata_id"
        ).fetchall()
    assert [s[0] for s in steps] == STEPS
    assert all(status == "succeeded" and ended for _s, status, _n, ended in steps)
    fact_step = next(s for s in steps if s[0] == "dwh.load_fact_sales_performance")
    assert fact_step[2] == round(8800 * SCALE)


def test_the_run_records_the_source_snapshot_it_read(loaded):
    with psycopg.connect(loaded.olap_dsn) as conn:
        snapshot = conn.execute(
            "SELECT source_snapshot::text FROM etl.run ORDER BY run_id DESC LIMIT 1"
        ).fetchone()[0]
    with psycopg.connect(loaded.oltp_dsn) as conn:
        visible = conn.execute(
            "SELECT pg_visible_in_snapshot(pg_current_xact_id(), %s::pg_snapshot)", (snapshot,)
        ).fetchone()[0]
    assert snapshot and ":" in snapshot
    assert visible is False  # a transaction that started after the extract is not in it


def test_a_rerun_rebuilds_the_same_warehouse(loaded):
    before = warehouse_state(loaded.olap_dsn)
    call(loaded.olap_dsn, "CALL etl.run_initial_load(500)")
    assert warehouse_state(loaded.olap_dsn) == before
    batches = scalar(
        loaded.olap_dsn,
        "SELECT batches FROM etl.loading_metadata WHERE step = 'dwh.load_fact_sales_performance'"
        " AND run_id = (SELECT max(run_id) FROM etl.run)",
    )
    assert batches >= 3  # 1,760 deals in batches of about 500 rows


# --- interruption --------------------------------------------------------------------------

PAUSE_LOCK = 4242

# The pause: in the fact step's batch that counts more than 600 deals, after the
# first committed batches, wait for the test's advisory lock. On the step's row of
# etl.loading_metadata (a batch records its counts in its own transaction), a local
# table on Citus too, where a trigger on the facts would fire on the workers.
PAUSE_TRIGGER = f"""
CREATE SCHEMA IF NOT EXISTS tests;
CREATE OR REPLACE FUNCTION tests.pause_fact_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.step = 'dwh.load_fact_sales_performance' AND NEW.rows_in > 600 THEN
        PERFORM pg_advisory_lock({PAUSE_LOCK});
        PERFORM pg_advisory_unlock({PAUSE_LOCK});
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pause_fact_load AFTER UPDATE ON etl.loading_metadata
    FOR EACH ROW EXECUTE FUNCTION tests.pause_fact_load();
"""


def start_paused_load(dsn: str, holder: psycopg.Connection) -> tuple[threading.Thread, list]:
    """Start CALL etl.run_initial_load(200) in a thread; it stops inside a fact batch
    while `holder` holds the pause lock. Returns the thread and its outcome list."""
    holder.execute("SELECT pg_advisory_lock(%s)", (PAUSE_LOCK,))
    outcome: list = []

    def load() -> None:
        try:
            call(dsn, "CALL etl.run_initial_load(200)")
            outcome.append("finished")
        except psycopg.Error as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waiting = holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
            " AND NOT granted",
            (PAUSE_LOCK,),
        ).fetchone()[0]
        if waiting:
            return thread, outcome
        time.sleep(0.05)
    raise AssertionError("the load never reached the pause point")


@pytest.fixture
def paused(loaded: dbtools.Warehouse) -> Iterator[tuple[dbtools.Warehouse, psycopg.Connection]]:
    call(loaded.olap_dsn, PAUSE_TRIGGER)
    holder = psycopg.connect(loaded.olap_dsn, autocommit=True)
    yield loaded, holder
    holder.close()
    call(loaded.olap_dsn, "DROP TRIGGER IF EXISTS pause_fact_load ON etl.loading_metadata")


def kill_the_load(holder: psycopg.Connection) -> None:
    holder.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
        " AND objid = %s AND NOT granted",
        (PAUSE_LOCK,),
    )
    holder.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))


def test_a_second_load_is_refused_while_one_is_executing(paused):
    warehouse, holder = paused
    thread, outcome = start_paused_load(warehouse.olap_dsn, holder)
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable, match="is executing"):
            call(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
        thread.join(60)
    assert outcome == ["finished"]


def test_a_killed_load_resumes_from_its_last_batch(paused):
    warehouse, holder = paused
    reference = warehouse_state(warehouse.olap_dsn)
    thread, outcome = start_paused_load(warehouse.olap_dsn, holder)
    kill_the_load(holder)
    thread.join(60)
    assert isinstance(outcome[0], psycopg.OperationalError)
    with psycopg.connect(warehouse.olap_dsn) as conn:
        run_id, status = conn.execute(
            "SELECT run_id, status FROM etl.run ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        resume_after, batches = conn.execute(
            "SELECT resume_after, batches FROM etl.loading_metadata WHERE run_id = %s"
            " AND step = 'dwh.load_fact_sales_performance'",
            (run_id,),
        ).fetchone()
    assert status == "running"  # the caller died: nobody could mark it
    assert batches >= 3 and int(resume_after) > 0
    call(warehouse.olap_dsn, "DROP TRIGGER pause_fact_load ON etl.loading_metadata")

    for step in [
        "dwh.load_fact_sales_performance",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.finish_run",
    ]:
        call(warehouse.olap_dsn, f"CALL {step}()")
    assert scalar(
        warehouse.olap_dsn, "SELECT status FROM etl.run WHERE run_id = %s", (run_id,)
    ) == ("succeeded")
    assert warehouse_state(warehouse.olap_dsn) == reference


def test_a_killed_load_is_superseded_by_a_clean_rerun(paused):
    warehouse, holder = paused
    reference = warehouse_state(warehouse.olap_dsn)
    thread, _outcome = start_paused_load(warehouse.olap_dsn, holder)
    kill_the_load(holder)
    thread.join(60)
    call(warehouse.olap_dsn, "DROP TRIGGER pause_fact_load ON etl.loading_metadata")
    with psycopg.connect(warehouse.olap_dsn, autocommit=True) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("CALL etl.run_initial_load()")
        statuses = conn.execute(
            "SELECT status FROM etl.run ORDER BY run_id DESC LIMIT 2"
        ).fetchall()
    assert any("was left running by an interrupted caller" in n for n in notices)
    assert statuses == [("succeeded",), ("failed",)]
    assert warehouse_state(warehouse.olap_dsn) == reference


def test_a_fact_step_that_misreads_the_staging_fails_instead_of_reporting_success(paused):
    """The fact step's last batch counts the deals its batches read against the staging: a
    batch rule that misses deals, or reads one twice, fails the step. Provoked where each
    storage can be: on Citus by addressing the distributed staging by heap blocks (its
    coordinator table is empty: the batches read nothing); on one server, where block
    ranges cannot miss, by staging a deal again behind the batches (it is read twice)."""
    warehouse, holder = paused
    reference = warehouse_state(warehouse.olap_dsn)
    if citus.enabled():
        call(warehouse.olap_dsn, "DROP TRIGGER pause_fact_load ON etl.loading_metadata")
        call(
            warehouse.olap_dsn,
            "ALTER FUNCTION etl.is_distributed(regclass) RENAME TO is_distributed_really",
        )
        call(
            warehouse.olap_dsn,
            "CREATE FUNCTION etl.is_distributed(regclass) RETURNS boolean"
            " LANGUAGE sql AS 'SELECT false'",
        )
        try:
            with pytest.raises(psycopg.errors.InternalError, match="read 0 of the"):
                call(warehouse.olap_dsn, "CALL etl.run_initial_load(200)")
        finally:
            call(warehouse.olap_dsn, "DROP FUNCTION etl.is_distributed(regclass)")
            call(
                warehouse.olap_dsn,
                "ALTER FUNCTION etl.is_distributed_really(regclass) RENAME TO is_distributed",
            )
    else:
        thread, outcome = start_paused_load(warehouse.olap_dsn, holder)
        # A deal the first batches read, written again: its new version is at the end.
        holder.execute(
            "UPDATE etl.stage_sales_pipeline SET close_value = close_value"
            " WHERE ctid = (SELECT min(ctid) FROM etl.stage_sales_pipeline)"
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
        thread.join(120)
        assert isinstance(outcome[0], psycopg.errors.InternalError), outcome
        assert "the fact step read" in str(outcome[0])
        call(warehouse.olap_dsn, "DROP TRIGGER pause_fact_load ON etl.loading_metadata")
    run_id, status = dbtools.query(
        warehouse.olap_dsn, "SELECT run_id, status FROM etl.run ORDER BY run_id DESC LIMIT 1"
    )[0]
    assert status == "failed"
    assert dbtools.scalar(
        warehouse.olap_dsn,
        "SELECT status FROM etl.loading_metadata"
        " WHERE run_id = %s AND step = 'dwh.load_fact_sales_performance'",
        (run_id,),
    ) == ("failed")
    call(warehouse.olap_dsn, "CALL etl.run_initial_load()")
    assert warehouse_state(warehouse.olap_dsn) == reference


def test_a_failing_step_fails_the_run_logs_the_error_and_can_be_resumed(loaded):
    reference = warehouse_state(loaded.olap_dsn)
    call(loaded.olap_dsn, "ALTER TABLE etl.stage_products RENAME TO stage_products_away")
    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            call(loaded.olap_dsn, "CALL etl.run_initial_load()")
    finally:
        call(loaded.olap_dsn, "ALTER TABLE etl.stage_products_away RENAME TO stage_products")
    with psycopg.connect(loaded.olap_dsn) as conn:
        run_id, status, message = conn.execute(
            "SELECT run_id, status, message FROM etl.run ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        error = conn.execute(
            "SELECT procedure_name, sqlstate, message, context FROM etl.error_log"
            " WHERE run_id = %s AND kind = 'error'",
            (run_id,),
        ).fetchone()
    assert status == "failed"
    assert message.startswith("etl.extract_source failed:")
    assert error[0] == "etl.extract_source" and error[1] == "42P01"
    assert "stage_products" in error[2] and "etl.stage_source" in error[3]
    # Calling the failed step again resumes the run; the rest follows.
    for step in STEPS:
        call(loaded.olap_dsn, f"CALL {step}()")
    assert scalar(loaded.olap_dsn, "SELECT status FROM etl.run WHERE run_id = %s", (run_id,)) == (
        "succeeded"
    )
    assert warehouse_state(loaded.olap_dsn) == reference


def test_a_step_without_a_run_is_a_clear_error(loaded):
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no etl run to work for"):
        call(loaded.olap_dsn, "CALL dwh.load_dim_account()")


def test_the_summary_shows_the_run_its_checks_and_figures(loaded):
    from b2bdwh.summary import summary

    text = summary(loaded.olap_dsn)
    assert "(initial_load) succeeded" in text
    assert "pass    every source row is loaded or quarantined" in text
    assert "FAIL" not in text
    for title in ("Won value by regional office", "Win rate by product", "Monthly won value"):
        assert title in text
    assert "Central" in text and "GTX Basic" in text


def test_a_run_between_steps_is_not_taken_over_but_can_be_abandoned(loaded):
    """Steps called one by one (as Airflow does) leave the run between steps: a second
    caller is refused, not allowed to supersede it; a DBA can give it up explicitly."""
    reference = warehouse_state(loaded.olap_dsn)
    with psycopg.connect(loaded.olap_dsn, autocommit=True) as conn:
        run_id = conn.execute("CALL etl.start_run('initial_load')").fetchone()[0]
        conn.execute("CALL etl.extract_source(%s)", (run_id,))
    with pytest.raises(
        psycopg.errors.LockNotAvailable, match=f"initial_load run {run_id} is between"
    ):
        call(loaded.olap_dsn, "CALL etl.run_incremental_update()")
    assert scalar(loaded.olap_dsn, "SELECT status FROM etl.run WHERE run_id = %s", (run_id,)) == (
        "running"
    )
    call(loaded.olap_dsn, f"CALL etl.abandon_run({run_id})")
    message = scalar(loaded.olap_dsn, "SELECT message FROM etl.run WHERE run_id = %s", (run_id,))
    assert message.startswith("abandoned by ")
    call(loaded.olap_dsn, "CALL etl.run_initial_load()")
    assert warehouse_state(loaded.olap_dsn) == reference
