"""The CRM's archive of closed deals, end to end (issue 14, first part).

In the source: `public.archive_closed_deals` moves the closed deals (Won, Lost) that closed
before a day out of `sales_pipeline` into `public.sales_pipeline_archive`, in committed
batches, resumable; `public.restore_archived_deals` moves deals back; both are a DBA's.
In the warehouse: an archived deal stays a live fact (aggregates, summaries, reports), marked
with when it was archived; a restored one loses the mark; a deal in neither table (a plain
DELETE, or one purged from the archive) is deleted. Every run here ends where a fresh initial
load of the same source ends. The space of statement shapes at large, archiving among them,
is tests/test_model_based.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.1  # 880 deals over three years
YEARS = 3
CUT_OFF = date(2016, 6, 1)

query, scalar, execute = dbtools.query, dbtools.scalar, dbtools.execute

CLOSED_BEFORE_CUT_OFF = f"""
    SELECT opportunity_id FROM public.sales_pipeline
     WHERE deal_stage IN ('Won', 'Lost') AND close_date < '{CUT_OFF}' ORDER BY 1"""


@dataclass
class Rig:
    oltp: str
    olap: str
    fresh: str


@pytest.fixture
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE, 3, years=YEARS)
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "archive_fresh")
    wc.set_config(fresh, "consumer_name", "archive_fresh")
    wc.run_initial(warehouse.olap_dsn)
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, fresh)
    dbtools.drop_database(name)


def archive(oltp: str, closed_before: date = CUT_OFF, batch_rows: int = 100) -> int:
    with psycopg.connect(oltp, autocommit=True) as conn:
        row = conn.execute(
            "CALL public.archive_closed_deals(%s, %s)", (closed_before, batch_rows)
        ).fetchone()
    assert row is not None
    return int(row[0])


def archived_in_source(oltp: str) -> dict[str, object]:
    return dict(
        query(oltp, "SELECT opportunity_id, archived_at FROM public.sales_pipeline_archive")
    )


def archived_in_warehouse(olap: str) -> dict[str, object]:
    return dict(
        query(
            olap,
            "SELECT opportunity_id, archived_at FROM dwh.fact_sales_performance"
            " WHERE archived_at IS NOT NULL AND NOT is_deleted",
        )
    )


def reports(olap: str) -> dict[str, list[tuple]]:
    """What analysts read: every reporting view whole."""
    views = (
        "dwh.v_sales_by_month",
        "dwh.v_agent_performance",
        "dwh.v_product_performance",
        "dwh.v_pipeline_by_stage",
        "dwh.v_account_performance",
    )
    return {v: sorted(query(olap, f"SELECT * FROM {v}"), key=repr) for v in views}


def assert_matches_a_fresh_load(rig: Rig) -> None:
    assert wc.last_run(rig.olap)[2] == "succeeded", wc.latest_run_problems(rig.olap)
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.olap)


def test_archiving_moves_the_old_closed_deals_in_batches_and_the_warehouse_keeps_them(rig: Rig):
    expected = [r[0] for r in query(rig.oltp, CLOSED_BEFORE_CUT_OFF)]
    # Deals the warehouse reads as closed though the CRM spelt the stage its own way go too;
    # an open deal and a deal closed on the cut-off day stay.
    execute(
        rig.oltp,
        "UPDATE public.sales_pipeline SET deal_stage = ' won ' WHERE opportunity_id = %s",
        (expected[0],),
    )
    stay = query(
        rig.oltp,
        f"""SELECT (SELECT opportunity_id FROM public.sales_pipeline
                     WHERE deal_stage = 'Engaging' ORDER BY 1 LIMIT 1),
                   (SELECT opportunity_id FROM public.sales_pipeline
                     WHERE deal_stage = 'Won' AND close_date >= '{CUT_OFF}' ORDER BY 1 LIMIT 1)""",
    )[0]
    execute(
        rig.oltp,
        "UPDATE public.sales_pipeline SET close_date = %s WHERE opportunity_id = %s",
        (CUT_OFF, stay[1]),
    )
    wc.run_incremental(rig.olap)
    before = reports(rig.olap)
    deals = scalar(rig.oltp, "SELECT count(*) FROM public.sales_pipeline")
    change_mark = scalar(rig.oltp, "SELECT coalesce(max(change_id), 0) FROM cdc.change_log")

    assert len(expected) > 250  # several batches of 100
    assert archive(rig.oltp) == len(expected)
    assert archive(rig.oltp) == 0  # nothing left: calling again moves nothing
    in_archive = archived_in_source(rig.oltp)
    assert sorted(in_archive) == expected
    assert not set(stay) & set(in_archive)
    assert scalar(rig.oltp, "SELECT count(*) FROM public.sales_pipeline") == deals - len(expected)
    # Captured as a move: each batch's transaction deletes from sales_pipeline and inserts
    # into the archive, the same keys.
    batches = query(
        rig.oltp,
        """SELECT txid, count(*) FILTER (WHERE table_name = 'sales_pipeline' AND operation = 'D'),
                  count(*) FILTER (WHERE table_name = 'sales_pipeline_archive' AND operation = 'I'),
                  count(DISTINCT row_key)
             FROM cdc.change_log WHERE change_id > %s GROUP BY txid""",
        (change_mark,),
    )
    assert len(batches) == -(-len(expected) // 100)
    assert all(d == i == k for _, d, i, k in batches), batches

    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
    assert archived_in_warehouse(rig.olap) == in_archive
    assert archived_in_warehouse(rig.fresh) == in_archive
    # Archiving is not deleting: every report reads as before.
    assert reports(rig.olap) == before
    assert scalar(rig.olap, "SELECT count(*) FROM dwh.fact_sales_performance WHERE is_deleted") == 0
    # Nor a change of the deal: the history has no row for it.
    assert (
        scalar(
            rig.olap,
            "SELECT count(*) FROM dwh.fact_deal_history"
            " WHERE run_id = (SELECT max(run_id) FROM etl.run)",
        )
        == 0
    )


def test_a_restored_deal_a_purged_one_and_a_plain_delete(rig: Rig):
    archive(rig.oltp)
    wc.run_incremental(rig.olap)
    keys = sorted(archived_in_source(rig.oltp))
    restored, purged = keys[:3], keys[3:5]
    live = query(
        rig.oltp,
        "SELECT opportunity_id FROM public.sales_pipeline"
        " WHERE deal_stage = 'Won' ORDER BY 1 LIMIT 1",
    )[0][0]
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        assert conn.execute("CALL public.restore_archived_deals(%s)", (restored,)).fetchone() == (
            3,
        )
        # Brought back, then changed by the CRM like any deal.
        conn.execute(
            "UPDATE public.sales_pipeline SET close_value = close_value + 1"
            " WHERE opportunity_id = %s",
            (restored[0],),
        )
        conn.execute(
            "DELETE FROM public.sales_pipeline_archive WHERE opportunity_id = ANY (%s)", (purged,)
        )
        conn.execute("DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (live,))
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
    facts = {
        r[0]: r[1:]
        for r in query(
            rig.olap,
            "SELECT opportunity_id, archived_at IS NOT NULL, is_deleted, close_value"
            " FROM dwh.fact_sales_performance WHERE opportunity_id = ANY (%s)",
            (restored + purged + [live],),
        )
    }
    assert all(facts[k][:2] == (False, False) for k in restored), facts
    assert all(facts[k][1] for k in purged), facts  # gone from both tables: deleted
    assert facts[live][:2] == (False, True)  # a plain DELETE stays a delete
    value = scalar(
        rig.oltp,
        "SELECT round(close_value, 2) FROM public.sales_pipeline WHERE opportunity_id = %s",
        (restored[0],),
    )
    assert facts[restored[0]][2] == value
    # The history shows the change after the restore once, and nothing for the moves.
    rows = scalar(
        rig.olap,
        "SELECT count(*) FROM dwh.fact_deal_history"
        " WHERE run_id = (SELECT max(run_id) FROM etl.run)"
        " AND opportunity_id = %s AND valid_to = 'infinity'",
        (restored[0],),
    )
    assert rows == 1


def test_a_killed_batch_loses_nothing_and_archiving_again_finishes(rig: Rig):
    """The second batch is stopped where it waits (a trigger the test plants sleeps on it)
    and its backend terminated: the first batch stays archived, the second is rolled back
    whole, nothing is lost or doubled; calling again archives the rest, and the warehouse
    applies it all once."""
    expected = [r[0] for r in query(rig.oltp, CLOSED_BEFORE_CUT_OFF)]
    execute(
        rig.oltp,
        """CREATE FUNCTION public.test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF (SELECT count(*) FROM public.sales_pipeline_archive) >= 100 THEN
                   PERFORM pg_sleep(60);
               END IF;
               RETURN NULL;
           END $$;
           CREATE TRIGGER test_stall BEFORE INSERT ON public.sales_pipeline_archive
           FOR EACH STATEMENT EXECUTE FUNCTION public.test_stall();""",
    )
    errors: list[BaseException] = []
    pid: list[int] = []

    def run() -> None:
        try:
            with psycopg.connect(rig.oltp, autocommit=True) as conn:
                pid.append(conn.info.backend_pid)
                conn.execute("CALL public.archive_closed_deals(%s, 100)", (CUT_OFF,))
        except psycopg.Error as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = scalar(
            rig.oltp,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            " AND query LIKE 'CALL public.archive_closed_deals%%'",
        )
        if waiting:
            break
        time.sleep(0.05)
    assert waiting, "the second batch never reached the planted trigger"
    assert scalar(rig.oltp, "SELECT pg_terminate_backend(%s)", (pid[0],)) is True
    worker.join(30)
    assert errors and isinstance(errors[0], psycopg.OperationalError), errors
    execute(rig.oltp, "DROP TRIGGER test_stall ON public.sales_pipeline_archive")
    execute(rig.oltp, "DROP FUNCTION public.test_stall()")

    # One batch committed, the second rolled back whole: every deal is in exactly one table.
    assert len(archived_in_source(rig.oltp)) == 100
    counts = query(
        rig.oltp,
        """SELECT count(*), count(DISTINCT opportunity_id) FROM (
               SELECT opportunity_id FROM public.sales_pipeline
               UNION ALL SELECT opportunity_id FROM public.sales_pipeline_archive) AS d""",
    )[0]
    assert counts == (880, 880)
    wc.run_incremental(rig.olap)  # a window that ends between the two calls
    assert_matches_a_fresh_load(rig)

    assert archive(rig.oltp) == len(expected) - 100
    assert sorted(archived_in_source(rig.oltp)) == expected
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
    assert archived_in_warehouse(rig.olap) == archived_in_source(rig.oltp)


def test_an_initial_load_reads_the_archive(rig: Rig):
    archive(rig.oltp)
    wc.run_initial(rig.olap)
    in_archive = archived_in_source(rig.oltp)
    assert archived_in_warehouse(rig.olap) == in_archive
    assert scalar(rig.olap, "SELECT count(*) FROM dwh.fact_sales_performance") == 880
    assert (
        scalar(
            rig.olap,
            "SELECT bool_and(passed) FROM etl.validation_result"
            " WHERE run_id = (SELECT max(run_id) FROM etl.run)",
        )
        is True
    )
    wc.assert_consistent(rig.olap)


@pytest.mark.parametrize(
    ("call", "sqlstate", "message"),
    [
        ("CALL public.archive_closed_deals(NULL)", "22004", "the cut-off date is NULL"),
        ("CALL public.archive_closed_deals('2016-01-01', 0)", "22023", "at least one deal, not 0"),
        ("CALL public.restore_archived_deals(NULL)", "22004", "the list of deals is NULL"),
        (
            "CALL public.restore_archived_deals('{NOSUCHID}')",
            "P0002",
            "1 of the deals are not in the archive: NOSUCHID",
        ),
    ],
)
def test_bad_calls_are_refused_and_change_nothing(
    rig: Rig, call: str, sqlstate: str, message: str
) -> None:
    before = dbtools.source_fingerprint(rig.oltp)
    with psycopg.connect(rig.oltp, autocommit=True) as conn, pytest.raises(psycopg.Error) as err:
        conn.execute(call)
    assert err.value.sqlstate == sqlstate
    assert message in str(err.value)
    assert dbtools.source_fingerprint(rig.oltp) == before


def test_archiving_is_a_dbas_the_crm_application_cannot(rig: Rig):
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        conn.execute("SET ROLE b2b_app")
        for statement in (
            "CALL public.archive_closed_deals('2016-01-01')",
            "CALL public.restore_archived_deals('{X}')",
            "SELECT count(*) FROM public.sales_pipeline_archive",
            "DELETE FROM public.sales_pipeline_archive",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("SET ROLE b2b_cdc_reader")
        conn.execute("SELECT count(*) FROM public.sales_pipeline_archive")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM public.sales_pipeline_archive")


def test_a_key_is_in_one_table_at_most(rig: Rig):
    """The CRM cannot reuse an archived key (it cannot see the archive); a DBA who put a live
    deal's key into the archive by hand does not block archiving: the deal archived replaces
    the older copy. A restore of a deal the CRM holds is refused, naming it."""
    archive(rig.oltp)
    archived_key = sorted(archived_in_source(rig.oltp))[0]
    with psycopg.connect(rig.oltp, autocommit=True) as conn:
        conn.execute("SET ROLE b2b_app")
        with pytest.raises(psycopg.errors.UniqueViolation) as err:
            conn.execute(
                "INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id,"
                " deal_stage) VALUES (%s, 1, 1, 'Prospecting')",
                (archived_key,),
            )
        assert f"opportunity_id {archived_key} is archived" in str(err.value)
        assert "restore_archived_deals" in (err.value.diag.message_hint or "")
        live = conn.execute(
            "SELECT opportunity_id FROM public.sales_pipeline WHERE deal_stage = 'Won'"
            " AND close_date >= %s ORDER BY 1 LIMIT 1",
            (CUT_OFF,),
        ).fetchone()[0]
        conn.execute("RESET ROLE")
        with pytest.raises(psycopg.errors.UniqueViolation, match="in sales_pipeline already"):
            conn.execute("CALL public.restore_archived_deals(%s)", ([live, archived_key],))
        assert conn.execute(
            "SELECT count(*) FROM public.sales_pipeline_archive WHERE opportunity_id = %s",
            (archived_key,),
        ).fetchone() == (1,)
        # A stale copy in the archive, by hand: archiving the live deal replaces it.
        conn.execute(
            "INSERT INTO public.sales_pipeline_archive (opportunity_id, sales_agent_id, product_id,"
            " deal_stage, close_value) SELECT opportunity_id, sales_agent_id, product_id, 'Lost', 0"
            " FROM public.sales_pipeline WHERE opportunity_id = %s",
            (live,),
        )
    as_live = query(
        rig.oltp,
        "SELECT deal_stage, close_value FROM public.sales_pipeline WHERE opportunity_id = %s",
        (live,),
    )
    assert as_live and as_live[0][0] == "Won"
    assert archive(rig.oltp, closed_before=date(2099, 1, 1)) > 0
    in_archive = "SELECT deal_stage, close_value FROM public.sales_pipeline_archive"
    assert query(rig.oltp, in_archive + " WHERE opportunity_id = %s", (live,)) == as_live
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)


def test_archiving_inside_a_transaction_block_is_refused_before_it_moves_anything(rig: Rig):
    before = dbtools.source_fingerprint(rig.oltp)
    notices: list[str] = []
    with psycopg.connect(rig.oltp) as conn:  # not autocommit: the driver's BEGIN
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            conn.execute("CALL public.archive_closed_deals(%s)", (CUT_OFF,))
        conn.rollback()
    assert notices == []
    assert dbtools.source_fingerprint(rig.oltp) == before


def test_a_dba_role_with_the_readme_grants_archives_and_restores(rig: Rig):
    role = "b2b_test_archiver"
    statements = [
        f"DROP ROLE IF EXISTS {role}",
        f"CREATE ROLE {role}",
        f"GRANT EXECUTE ON PROCEDURE public.archive_closed_deals(date, integer, bigint),"
        f" public.restore_archived_deals(text[], bigint) TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.sales_pipeline,"
        f" public.sales_pipeline_archive TO {role}",
    ]
    for statement in statements:
        execute(rig.oltp, statement)
    try:
        with psycopg.connect(rig.oltp, autocommit=True) as conn:
            conn.execute(f"SET ROLE {role}")
            moved = conn.execute("CALL public.archive_closed_deals(%s, 100)", (CUT_OFF,)).fetchone()
            assert moved and moved[0] > 0
            key = conn.execute(
                "SELECT min(opportunity_id) FROM public.sales_pipeline_archive"
            ).fetchone()[0]
            assert conn.execute("CALL public.restore_archived_deals(%s)", ([key],)).fetchone() == (
                1,
            )
    finally:
        execute(rig.oltp, f"DROP OWNED BY {role}")
        execute(rig.oltp, f"DROP ROLE {role}")
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)
