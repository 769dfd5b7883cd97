"""Shared helpers for the incremental-update tests: calling the pipeline, a second
warehouse on the same source, and comparing warehouses by business keys.

Three views of a warehouse:

- `live_content` and `consistency_problems` (from b2bdwh.compare, shared with
  bench/soak.py): what a user sees of the source through it, by business keys,
  which a fresh initial load of the same source must show too; and the rules
  an incrementally maintained warehouse keeps on its own.
- `exact_state`: every row, deleted ones, product history, the deal history and its
  as-of summaries included, with surrogate keys translated (a product version is
  (product_id, valid_from));
  two warehouses that applied the same windows of the same source must be
  equal on it, whatever happened to their runs.

`PausePoint` stops a pipeline run at a chosen point (the start of a step, or
a statement on a table) on an advisory lock the test holds, so that the test
can act while it waits, terminate its backend, or let it go on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

import dbtools
from b2bdwh import citus
from b2bdwh.compare import (  # noqa: F401  (re-exported for the tests)
    CONSISTENCY_CHECKS,
    KNOWN_STAGES,
    Content,
    check_problems,
    consistency_problems,
    content_differences,
    dict_differences,
    live_content,
    source_content,
)

# --- calling ---------------------------------------------------------------------------------


call, fetch = dbtools.execute, dbtools.query

# The step procedures of each pipeline, in the order the entry points and the DAGs call them
# (after etl.start_run). tests/test_dags.py holds the DAGs to the same lists on its own.
INITIAL_STEPS = (
    "etl.extract_source",
    "etl.purge_change_log",  # registers the load's snapshot as this warehouse's position
    "dwh.load_dim_date",
    "dwh.load_dim_account",
    "dwh.load_dim_sales_agent",
    "dwh.load_dim_product",
    "dwh.load_fact_sales_performance",
    "dwh.load_deal_history",  # initial load: after the facts (its seed is made from them)
    "dwh.load_fact_sales_monthly_aggregate",
    "etl.validate_run",
    "etl.finish_run",
)
INCREMENTAL_STEPS = (
    "etl.pull_change_window",
    *INITIAL_STEPS[2:6],
    "dwh.load_deal_history",  # incremental: before the facts (it copies a deal's seed first)
    "dwh.load_fact_sales_performance",
    *INITIAL_STEPS[8:-1],
    "etl.purge_change_log",
    "etl.finish_run",
)


def scalar(dsn: str, query: str, params: tuple = ()) -> Any:
    rows = fetch(dsn, query, params)
    return rows[0][0] if rows else None


def run_incremental(dsn: str, batch_size: int | None = None) -> None:
    if batch_size is None:
        call(dsn, "CALL etl.run_incremental_update()")
    else:
        call(dsn, "CALL etl.run_incremental_update(%s)", (batch_size,))


def run_initial(dsn: str) -> None:
    call(dsn, "CALL etl.run_initial_load()")


def last_run(dsn: str) -> tuple:
    """(run_id, pipeline, status, message) of the newest run."""
    return fetch(
        dsn, "SELECT run_id, pipeline, status, message FROM etl.run ORDER BY run_id DESC LIMIT 1"
    )[0]


# --- more warehouses on one source ------------------------------------------------------------


def attach_warehouse(oltp_dsn: str, label: str) -> tuple[str, str]:
    """A new, empty warehouse whose foreign server reads the existing source at oltp_dsn:
    (database name, dsn). Drop it with dbtools.drop_database(name)."""
    safe = re.sub(r"\W", "_", label)[-28:]
    name = f"b2bdwh_x_{safe}_{dbtools.RUN_TAG}".lower()
    return name, dbtools.create_warehouse(name, oltp_dsn)


def set_config(dsn: str, key: str, value: str) -> None:
    call(dsn, "UPDATE etl.config SET value = %s WHERE key = %s", (value, key))


def assert_same_live_content(incremental_dsn: str, fresh_dsn: str, oltp_dsn: str) -> None:
    """The incremental warehouse shows the same live content as a fresh initial load of the
    same source, and both show the source itself."""
    incremental = live_content(incremental_dsn)
    fresh = live_content(fresh_dsn)
    source = source_content(oltp_dsn)
    problems = content_differences(incremental, fresh)
    problems += content_differences(incremental, source, ("incremental", "source"))
    problems += content_differences(fresh, source, ("fresh load", "source"))
    assert not problems, "warehouses disagree:\n  " + "\n  ".join(problems)


# --- rules the incremental warehouse keeps on its own ---------------------------------------

# Checks of what the latest run wrote (call right after a run).
LATEST_RUN_CHECKS = {
    # A deal without an engage date takes the version current when its fact is written.
    "fact without an engage date written by the latest run, not on the latest version": """
        SELECT f.opportunity_id, f.product_key, l.product_key AS latest
          FROM dwh.fact_sales_performance AS f
          JOIN dwh.dim_product AS p USING (product_key)
          CROSS JOIN LATERAL (
              SELECT v.product_key FROM dwh.dim_product AS v
               WHERE v.product_id = p.product_id ORDER BY v.valid_from DESC LIMIT 1) AS l
         WHERE f.run_id = (SELECT max(run_id) FROM etl.run) AND NOT f.is_deleted
           AND f.engage_date_key = -1 AND f.product_key <> -1 AND l.product_key <> f.product_key""",
}


def latest_run_problems(olap_dsn: str, limit: int = 8) -> list[str]:
    return check_problems(olap_dsn, LATEST_RUN_CHECKS, limit)


def assert_consistent(olap_dsn: str) -> None:
    problems = consistency_problems(olap_dsn)
    assert not problems, "inconsistent warehouse:\n  " + "\n  ".join(problems)


def product_histories(olap_dsn: str) -> dict[int, list[tuple]]:
    """Per product_id, its versions in valid_from order: (series, sales_price, is_current,
    is_deleted)."""
    out: dict[int, list[tuple]] = {}
    for product_id, *version in fetch(
        olap_dsn,
        "SELECT product_id, series, sales_price, is_current, is_deleted FROM dwh.dim_product"
        " WHERE product_key <> -1 ORDER BY product_id, valid_from",
    ):
        out.setdefault(product_id, []).append(tuple(version))
    return out


def history_differences(actual: dict[int, list[tuple]], expected: dict[int, list[tuple]]) -> list:
    """Product histories against expected ones given as (series, price, status) per version,
    status 'current', 'closed' (by the next version) or 'deleted' (closed by a source delete:
    that version must be marked deleted; whether older versions of a product deleted later
    are marked too is left open)."""
    out = []
    for pid in sorted(set(actual) | set(expected)):
        got, want = actual.get(pid, []), expected.get(pid, [])
        ok = len(got) == len(want) and all(
            (g[0], g[1], g[2]) == (w[0], w[1], w[2] == "current")
            and (w[2] != "deleted" or g[3])
            and (w[2] != "current" or not g[3])
            for g, w in zip(got, want, strict=False)
        )
        if not ok:
            out.append(f"product {pid}: versions {got} expected {want}")
    return out


def deleted_members(olap_dsn: str) -> dict[str, set]:
    """Business keys the warehouse keeps marked deleted: deals, accounts, agents; and products
    without a current version."""
    return {
        "sales_pipeline": {
            r[0]
            for r in fetch(
                olap_dsn,
                "SELECT opportunity_id FROM dwh.fact_sales_performance WHERE is_deleted",
            )
        },
        "accounts": {
            r[0] for r in fetch(olap_dsn, "SELECT account_id FROM dwh.dim_account WHERE is_deleted")
        },
        "sales_agents": {
            r[0]
            for r in fetch(
                olap_dsn, "SELECT sales_agent_id FROM dwh.dim_sales_agent WHERE is_deleted"
            )
        },
        "products": {
            r[0]
            for r in fetch(
                olap_dsn,
                "SELECT product_id FROM dwh.dim_product WHERE product_key <> -1"
                " GROUP BY 1 HAVING NOT bool_or(is_current)",
            )
        },
    }


# --- the exact state: twin warehouses that applied the same windows -------------------------

EXACT_QUERIES = {
    "accounts": """
        SELECT account_id, account_name, sector, year_established, revenue, employees,
               office_location, parent_account_id, is_deleted
          FROM dwh.dim_account WHERE account_key <> -1""",
    "agents": """
        SELECT sales_agent_id, sales_agent_name, manager_name, regional_office, is_deleted
          FROM dwh.dim_sales_agent WHERE sales_agent_key <> -1""",
    "product_versions": """
        SELECT (product_id, valid_from)::text, valid_to::text, product_name, series, sales_price,
               is_current, is_deleted
          FROM dwh.dim_product WHERE product_key <> -1""",
    "facts": """
        SELECT f.opportunity_id, a.account_id, (p.product_id, p.valid_from)::text,
               g.sales_agent_id, f.deal_stage_key, f.engage_date_key, f.close_date_key,
               f.close_value, f.list_price, f.is_won, f.is_closed, f.days_to_close, f.is_deleted,
               f.archived_at
          FROM dwh.fact_sales_performance AS f
          JOIN dwh.dim_account AS a USING (account_key)
          JOIN dwh.dim_product AS p USING (product_key)
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)""",
    "aggregate": """
        SELECT (m.month_date_key, g.sales_agent_id, p.product_id, p.valid_from)::text,
               m.won_deals, m.lost_deals, m.won_value
          FROM dwh.fact_sales_monthly_aggregate AS m
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
          JOIN dwh.dim_product AS p USING (product_key)""",
    "dim_date": "SELECT 'range', count(*), min(date_key), max(date_key) FROM dwh.dim_date",
    # The deal history (the table and the initial load's seed) and its as-of summaries.
    # (A seed row of a deal without dates starts or ends at the initial load's snapshot time,
    # which differs between twins that each did their own initial load: named, not compared.)
    "deal_history": """
        SELECT (h.opportunity_id, t.valid_from)::text, t.valid_to, h.deal_stage_key,
               g.sales_agent_id, (p.product_id, p.valid_from)::text, a.account_id, h.close_value,
               h.engage_date_key, h.close_date_key, h.is_closed, h.is_won, h.entered_stage,
               h.txid::text, h.change_id
          FROM dwh.v_deal_history AS h
          JOIN dwh.dim_account AS a USING (account_key)
          JOIN dwh.dim_product AS p USING (product_key)
          JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
         CROSS JOIN (SELECT r.source_snapshot_at FROM etl.run AS r
                      WHERE r.pipeline = 'initial_load' ORDER BY r.run_id DESC LIMIT 1) AS l
         CROSS JOIN LATERAL (
             SELECT CASE WHEN h.valid_from = l.source_snapshot_at THEN 'load snapshot'
                         ELSE h.valid_from::text END AS valid_from,
                    CASE WHEN h.valid_to = l.source_snapshot_at THEN 'load snapshot'
                         ELSE h.valid_to::text END AS valid_to) AS t""",
    "deal_pipeline": """
        SELECT (d.day, d.deal_stage_key, g.sales_agent_id, d.product_id)::text, d.deals,
               d.open_value
          FROM dwh.deal_pipeline_day AS d JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
         WHERE d.deals <> 0 OR d.open_value <> 0""",
    "deal_durations": """
        SELECT (d.close_month, g.sales_agent_id, d.product_id, d.days)::text, d.deals
          FROM dwh.deal_stage_duration AS d JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
         WHERE d.deals <> 0""",
    "deal_conversion": """
        SELECT (c.entry_month, c.from_stage_key, c.to_stage_key)::text, c.deals
          FROM dwh.deal_stage_conversion AS c WHERE c.deals <> 0""",
}


def exact_state(olap_dsn: str) -> dict[str, dict]:
    with psycopg.connect(olap_dsn) as conn:
        return {
            name: {r[0]: tuple(r[1:]) for r in conn.execute(query).fetchall()}
            for name, query in EXACT_QUERIES.items()
        }


def assert_same_exact_state(actual_dsn: str, twin_dsn: str) -> None:
    actual, twin = exact_state(actual_dsn), exact_state(twin_dsn)
    problems: list[str] = []
    for name in EXACT_QUERIES:
        problems += dict_differences(
            name, actual[name], twin[name], labels=("interrupted", "uninterrupted twin")
        )
    assert not problems, "the twins differ:\n  " + "\n  ".join(problems)


# --- pausing and killing a run ---------------------------------------------------------------

PAUSE_SETUP = """
CREATE SCHEMA IF NOT EXISTS tests;
CREATE SEQUENCE IF NOT EXISTS tests.pause_calls;
-- Trigger arguments: the advisory lock to wait for, and from which call on to wait.
-- SECURITY DEFINER: it fires inside the pipeline's functions, which run as b2b_owner.
CREATE OR REPLACE FUNCTION tests.pause_here() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF nextval('tests.pause_calls') >= TG_ARGV[1]::bigint THEN
        PERFORM pg_advisory_lock(TG_ARGV[0]::bigint);
        PERFORM pg_advisory_unlock(TG_ARGV[0]::bigint);
    END IF;
    RETURN NULL;
END $$;
"""


class BackgroundCall:
    """A statement run on its own autocommit connection in a thread; `outcome` is 'finished'
    or the psycopg error it raised. `pid` is its backend."""

    def __init__(self, dsn: str, statement: str, params: tuple | None = None) -> None:
        self.outcome: object = None
        self.pid: int | None = None
        self._started = threading.Event()

        def work() -> None:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    self.pid = conn.info.backend_pid
                    self._started.set()
                    conn.execute(statement, params)
                self.outcome = "finished"
            except psycopg.Error as exc:
                self.outcome = exc
            finally:
                self._started.set()

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()
        self._started.wait(30)

    def join(self, timeout: float = 120) -> object:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background call did not end"
        return self.outcome


class PausePoint:
    """A place where a run of the warehouse at dsn waits for an advisory lock this object
    holds: at the start of a step (`at_step`: its etl.loading_metadata row is inserted,
    after begin_step took the pipeline lock, before the unit runs), or after a statement on
    a table (`on_statement`), from its `from_call`-th time on."""

    def __init__(self, dsn: str, lock_key: int = 770_001) -> None:
        self.dsn = dsn
        self.lock_key = lock_key
        self.triggers: list[tuple[str, str]] = []
        self.holder = psycopg.connect(dsn, autocommit=True)
        self.holder.execute(PAUSE_SETUP)
        self.holder.execute("ALTER SEQUENCE tests.pause_calls RESTART")
        self.held = False

    def at_step(self, step: str) -> PausePoint:
        name = f"pause_{len(self.triggers)}"
        self.holder.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER INSERT ON etl.loading_metadata FOR EACH ROW"
                " WHEN (NEW.step = {}) EXECUTE FUNCTION tests.pause_here({}, '1')"
            ).format(sql.Identifier(name), sql.Literal(step), sql.Literal(str(self.lock_key)))
        )
        self.triggers.append((name, "etl.loading_metadata"))
        return self

    def on_statement(self, table: str, event: str = "INSERT", from_call: int = 1) -> PausePoint:
        name = f"pause_{len(self.triggers)}"
        if self._on_workers(table):
            return self._after_step_counts(name, table, from_call)
        schema, rel = table.split(".")
        self.holder.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT"
                " EXECUTE FUNCTION tests.pause_here({}, {})"
            ).format(
                sql.Identifier(name),
                sql.SQL(event),
                sql.Identifier(schema, rel),
                sql.Literal(str(self.lock_key)),
                sql.Literal(str(from_call)),
            )
        )
        self.triggers.append((name, table))
        return self

    def _on_workers(self, table: str) -> bool:
        """On Citus, whether the table's rows live on the workers (distributed or
        reference), where no trigger of the coordinator fires."""
        if not citus.enabled():
            return False
        return self.holder.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = %s::regclass)",
            (table,),
        ).fetchone()[0]

    def _after_step_counts(self, name: str, table: str, from_call: int) -> PausePoint:
        """The pause for a statement on a table on the workers: where the step writing the
        table records a unit's or a batch's counts (its etl.loading_metadata row, local), in
        the same transaction as the statement, from its from_call-th time on."""
        steps = self.holder.execute(
            "SELECT count(*) FROM etl.pipeline_step WHERE table_name = %s", (table,)
        ).fetchone()[0]
        assert steps, f"on Citus a pause on {table} needs a step writing it (etl.pipeline_step)"
        self.holder.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER UPDATE ON etl.loading_metadata FOR EACH ROW"
                " WHEN (NEW.table_name = {} AND NEW.status = 'running')"
                " EXECUTE FUNCTION tests.pause_here({}, {})"
            ).format(
                sql.Identifier(name),
                sql.Literal(table),
                sql.Literal(str(self.lock_key)),
                sql.Literal(str(from_call)),
            )
        )
        self.triggers.append((name, "etl.loading_metadata"))
        return self

    def hold(self) -> None:
        self.holder.execute("SELECT pg_advisory_lock(%s)", (self.lock_key,))
        self.held = True

    def release(self) -> None:
        if self.held:
            self.holder.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))
            self.held = False

    def waiting_pid(self) -> int | None:
        row = self.holder.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = 0 AND objid = %s AND objsubid = 1",
            (self.lock_key,),
        ).fetchone()
        return row[0] if row else None

    def wait_until_paused(self, call_: BackgroundCall | None = None, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.waiting_pid()
            if pid is not None:
                return pid
            if call_ is not None and not call_.thread.is_alive():
                raise AssertionError(f"the run ended before the pause point: {call_.outcome!r}")
            time.sleep(0.02)
        raise AssertionError("the run never reached the pause point")

    def kill(self, pid: int) -> None:
        """Terminate the paused backend, wait until it is gone, then let go of the lock."""
        self.holder.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 30
        while self.holder.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()[0]:
            assert time.monotonic() < deadline, f"backend {pid} did not exit"
            time.sleep(0.02)
        self.release()

    def remove(self) -> None:
        self.release()
        for name, table in self.triggers:
            schema, rel = table.split(".")
            self.holder.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(name), sql.Identifier(schema, rel)
                )
            )
        self.triggers.clear()

    def close(self) -> None:
        self.remove()
        self.holder.close()


def keys_missing(expected: Iterable, present: set) -> list:
    return sorted((k for k in expected if k not in present), key=str)


# --- callers started together, and what they may leave behind -------------------------------


def pipeline_leftovers(olap_dsn: str) -> list[str]:
    """What a finished or refused caller must never leave: a run still 'running', or the
    pipeline lock held (etl.pipeline_lock_holder() not NULL). Empty when clean."""
    out = [
        f"run {run_id} ({pipeline}) left 'running' since {started}"
        for run_id, pipeline, started in fetch(
            olap_dsn,
            "SELECT run_id, pipeline, started_at::text FROM etl.run WHERE status = 'running'",
        )
    ]
    holder = scalar(olap_dsn, "SELECT etl.pipeline_lock_holder()")
    if holder is not None:
        out.append(f"pipeline lock held by backend {holder}")
    return out


class Callers:
    """Callers of the pipeline on connections of their own, started together through a
    barrier. Their connections stay open after the calls (as a psql session or a pooled
    connection does) until `close()`, so that whatever a caller left held is seen.
    `outcomes[i]` is None (the call returned) or the psycopg error it raised."""

    def __init__(self, dsn: str, statements: list[str], timeout: float = 120) -> None:
        self.statements = statements
        self.conns = [psycopg.connect(dsn, autocommit=True) for _ in statements]
        self.outcomes: list[psycopg.Error | None] = [None] * len(statements)
        barrier = threading.Barrier(len(statements))
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                barrier.wait(30)
                self.conns[i].execute(statements[i])
            except psycopg.Error as exc:
                self.outcomes[i] = exc
            except BaseException as exc:  # a broken barrier: reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(statements))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        stuck = [statements[i] for i, t in enumerate(threads) if t.is_alive()]
        assert not stuck, f"callers still running after {timeout}s: {stuck}"
        assert not errors, errors

    @staticmethod
    def describe(outcome: psycopg.Error | None) -> str:
        if outcome is None:
            return "succeeded"
        diag = outcome.diag
        return f"{outcome.sqlstate} {diag.message_primary} (hint: {diag.message_hint})"

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
