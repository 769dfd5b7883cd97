"""Incremental runs while the CRM keeps writing: no change is lost, none is applied twice.

Writers work on connections of their own, in threads; some hold a transaction open across
incremental runs, others commit quickly, some commit while a run is in the middle of its
steps. Interleavings that matter are forced with events and with a run held at a step on an
advisory lock (warehouse_compare.PausePoint), not left to sleeps. After the writers stop and
one more run, the warehouse must show what a fresh initial load of the same source shows
(warehouse_compare.assert_same_live_content) and keep its own rules; product versions must
be exactly the committed price changes, in commit order.

The source purges applied changes at once here (change_retention 0): a change of a
transaction that was still open when a run applied its window must survive the purge.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.05  # 440 deals, 4 accounts, 35 agents, 7 products
TIMEOUT = 60


@dataclass
class Rig:
    oltp: str
    olap: str
    fresh: str


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE)
    name, fresh = wc.attach_warehouse(warehouse.oltp_dsn, "concurrency_fresh")
    wc.set_config(fresh, "consumer_name", "concurrency_fresh")
    wc.set_config(warehouse.olap_dsn, "change_retention", "0 seconds")
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, fresh)
    dbtools.drop_database(name)


@pytest.fixture
def loaded(rig: Rig) -> Rig:
    """Every test starts from an initial load of the source as it is."""
    wc.run_initial(rig.olap)
    return rig


def assert_matches_a_fresh_load(rig: Rig) -> None:
    wc.run_initial(rig.fresh)
    wc.assert_same_live_content(rig.olap, rig.fresh, rig.oltp)
    wc.assert_consistent(rig.olap)


class Runner:
    """Incremental runs of one warehouse, counted; waiters can block until n have finished."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.completed = 0
        self.errors: list[BaseException] = []
        self.cond = threading.Condition()

    def run_once(self) -> None:
        wc.run_incremental(self.dsn)
        with self.cond:
            self.completed += 1
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.completed >= n or self.errors, TIMEOUT)
        assert ok and not self.errors, f"waited for {n} runs: {self.completed}, {self.errors}"

    def loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.run_once()
        except BaseException as exc:  # reported by the test
            with self.cond:
                self.errors.append(exc)
                self.cond.notify_all()


class Worker(threading.Thread):
    """A thread whose exception is re-raised by join()."""

    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float | None = TIMEOUT) -> None:
        super().join(timeout)
        assert not self.is_alive(), "a writer did not finish"
        if self.error is not None:
            raise self.error


def writer_conn(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET lock_timeout = '20s'")
    return conn


def deal_ids(dsn: str, stage: str, n: int, offset: int = 0) -> list[str]:
    return [
        r[0]
        for r in wc.fetch(
            dsn,
            "SELECT opportunity_id FROM public.sales_pipeline WHERE deal_stage = %s"
            " ORDER BY opportunity_id LIMIT %s OFFSET %s",
            (stage, n, offset),
        )
    ]


def fact_stage(olap: str, opportunity_id: str) -> str | None:
    return wc.scalar(
        olap,
        "SELECT CASE WHEN f.is_deleted THEN 'deleted' ELSE s.deal_stage_name END"
        " FROM dwh.fact_sales_performance AS f JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)"
        " WHERE f.opportunity_id = %s",
        (opportunity_id,),
    )


def current_price(olap: str, product_id: int) -> Decimal:
    return wc.scalar(
        olap,
        "SELECT sales_price FROM dwh.dim_product WHERE product_id = %s AND is_current",
        (product_id,),
    )


def price_history(olap: str, product_id: int) -> list[Decimal]:
    return [
        r[0]
        for r in wc.fetch(
            olap,
            "SELECT sales_price FROM dwh.dim_product WHERE product_id = %s ORDER BY valid_from",
            (product_id,),
        )
    ]


# --- deterministic interleavings --------------------------------------------------------------


def test_a_transaction_open_across_two_runs_is_applied_when_it_commits(loaded: Rig) -> None:
    rig = loaded
    runner = Runner(rig.olap)
    engaging = deal_ids(rig.oltp, "Engaging", 4)
    lost = deal_ids(rig.oltp, "Lost", 1)[0]
    price_before = current_price(rig.olap, 1)
    a_wrote, c_began, a_committed, c_committed = (threading.Event() for _ in range(4))

    def writer_a() -> None:
        """Writes before run 1, commits after run 2."""
        with writer_conn(rig.oltp) as conn, conn.transaction():
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = DATE"
                " '2017-12-12', close_value = 1234, account_id = 1 WHERE opportunity_id = %s",
                (engaging[0],),
            )
            conn.execute("UPDATE public.products SET sales_price = 1111 WHERE product_id = 1")
            conn.execute("DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (lost,))
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES"
                " ('CONC-A1', 3, 1, 2, 'Won', DATE '2017-06-01', DATE '2017-07-01', 500)"
            )
            conn.execute("UPDATE public.accounts SET sector = 'held open' WHERE account_id = 2")
            a_wrote.set()
            runner.wait_for(2)
        a_committed.set()

    def writer_c() -> None:
        """Begins before run 1 (a snapshot, no transaction id yet), writes after it,
        commits after run 2."""
        with writer_conn(rig.oltp) as conn, conn.transaction():
            conn.execute("SELECT count(*) FROM public.sales_pipeline")
            c_began.set()
            runner.wait_for(1)
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Lost', close_date = DATE"
                " '2017-12-13', close_value = 0, account_id = 3 WHERE opportunity_id = %s",
                (engaging[1],),
            )
            runner.wait_for(2)
        c_committed.set()

    def writer_b() -> None:
        """Commits quickly, between run 1 and run 2."""
        with writer_conn(rig.oltp) as conn, conn.transaction():
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = DATE"
                " '2017-11-11', close_value = 77, account_id = 4 WHERE opportunity_id = %s",
                (engaging[2],),
            )
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES"
                " ('CONC-B1', 4, 2, NULL, 'Engaging', DATE '2017-09-01', NULL, NULL)"
            )

    a, c = Worker(writer_a), Worker(writer_c)
    a.start()
    c.start()
    assert a_wrote.wait(TIMEOUT) and c_began.wait(TIMEOUT)
    runner.run_once()  # run 1: A is open, C has not written
    assert fact_stage(rig.olap, engaging[0]) == "Engaging"
    b = Worker(writer_b)
    b.start()
    b.join()
    runner.run_once()  # run 2: B's changes; A and C still open
    assert fact_stage(rig.olap, engaging[2]) == "Won"
    assert fact_stage(rig.olap, "CONC-B1") == "Engaging"
    a.join()
    c.join()
    assert a_committed.is_set() and c_committed.is_set()
    # Committed now, but after run 2's snapshot: not applied yet ...
    assert fact_stage(rig.olap, engaging[0]) == "Engaging"
    assert fact_stage(rig.olap, engaging[1]) == "Engaging"
    assert current_price(rig.olap, 1) == price_before
    runner.run_once()  # ... and run 3 applies them
    assert fact_stage(rig.olap, engaging[0]) == "Won"
    assert fact_stage(rig.olap, engaging[1]) == "Lost"
    assert fact_stage(rig.olap, lost) == "deleted"
    assert fact_stage(rig.olap, "CONC-A1") == "Won"
    assert current_price(rig.olap, 1) == 1111
    assert_matches_a_fresh_load(rig)


def test_a_commit_while_a_run_is_between_its_steps_goes_to_the_next_run(loaded: Rig) -> None:
    rig = loaded
    deals = deal_ids(rig.oltp, "Prospecting", 3)
    early = writer_conn(rig.oltp)
    pause = wc.PausePoint(rig.olap).at_step("dwh.load_dim_account")
    try:
        # Wrote before the run, commits while the run is held after its pull.
        early.execute("BEGIN")
        early.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Engaging', engage_date = DATE"
            " '2017-10-10' WHERE opportunity_id = %s",
            (deals[0],),
        )
        early.execute("UPDATE public.products SET sales_price = 2222 WHERE product_id = 2")
        pause.hold()
        run = wc.BackgroundCall(rig.olap, "CALL etl.run_incremental_update()")
        pause.wait_until_paused(run)
        early.execute("COMMIT")
        # A whole transaction while the run is held, on the same product and a deal.
        with writer_conn(rig.oltp) as conn, conn.transaction():
            conn.execute("UPDATE public.products SET sales_price = 3333 WHERE product_id = 2")
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Engaging', engage_date = DATE"
                " '2017-10-11' WHERE opportunity_id = %s",
                (deals[1],),
            )
        pause.release()
        assert run.join() == "finished"
    finally:
        pause.close()
        early.close()
    assert fact_stage(rig.olap, deals[0]) == "Prospecting"
    assert fact_stage(rig.olap, deals[1]) == "Prospecting"
    wc.run_incremental(rig.olap)
    assert fact_stage(rig.olap, deals[0]) == "Engaging"
    assert fact_stage(rig.olap, deals[1]) == "Engaging"
    # Two committed price changes: two versions, in commit order.
    assert price_history(rig.olap, 2)[-2:] == [2222, 3333]
    assert_matches_a_fresh_load(rig)


def test_a_second_run_while_a_step_executes_is_refused(loaded: Rig) -> None:
    rig = loaded
    deal = deal_ids(rig.oltp, "Engaging", 1, offset=10)[0]
    with writer_conn(rig.oltp) as conn:
        conn.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = DATE '2017-12-20',"
            " close_value = 42, account_id = 1 WHERE opportunity_id = %s",
            (deal,),
        )
    pause = wc.PausePoint(rig.olap).on_statement("dwh.fact_sales_performance", "INSERT")
    try:
        pause.hold()
        run = wc.BackgroundCall(rig.olap, "CALL etl.run_incremental_update()")
        pause.wait_until_paused(run)
        with pytest.raises(psycopg.errors.LockNotAvailable, match="is executing"):
            wc.run_incremental(rig.olap)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            wc.call(rig.olap, "CALL etl.pull_change_window()")
        with writer_conn(rig.oltp) as conn:  # a commit meanwhile: for the next run
            conn.execute(
                "UPDATE public.sales_pipeline SET close_value = 43 WHERE opportunity_id = %s",
                (deal,),
            )
        pause.release()
        assert run.join() == "finished"
    finally:
        pause.close()
    assert wc.last_run(rig.olap)[2] == "succeeded"
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)


def test_a_run_started_between_the_steps_of_another_applies_the_window_once(
    loaded: Rig,
) -> None:
    """A DAG run works step by step; between two of its tasks nobody holds the pipeline lock,
    and a psql user calls the incremental update. Either the call is refused and the DAG run
    goes on, or it takes over (the DAG run counts as abandoned) and the DAG run's next task
    fails clearly; either way the window ends up applied exactly once."""
    rig = loaded
    deals = deal_ids(rig.oltp, "Engaging", 3, offset=20)
    with writer_conn(rig.oltp) as conn:
        for n, deal in enumerate(deals):
            with conn.transaction():
                conn.execute(
                    "UPDATE public.sales_pipeline SET deal_stage = 'Won', close_date = DATE"
                    " '2017-12-01' + %s, close_value = 500 + %s, account_id = 2"
                    " WHERE opportunity_id = %s",
                    (n, n, deal),
                )
                conn.execute(
                    "UPDATE public.products SET sales_price = sales_price + 1 WHERE product_id = 3"
                )
    steps = [
        "etl.pull_change_window",
        "dwh.load_dim_date",
        "dwh.load_dim_account",
        "dwh.load_dim_sales_agent",
        "dwh.load_dim_product",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_performance",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.purge_change_log",
        "etl.finish_run",
    ]
    with psycopg.connect(rig.olap, autocommit=True) as dag:
        run_id = dag.execute("CALL etl.start_run('incremental_update', NULL, NULL)").fetchone()[0]
        for step in steps[:6]:
            dag.execute(f"CALL {step}(%s)", (run_id,))
        with writer_conn(rig.oltp) as conn:
            conn.execute(
                "UPDATE public.sales_pipeline SET close_value = 999 WHERE opportunity_id = %s",
                (deals[0],),
            )
        refusal: psycopg.Error | None = None
        try:
            wc.run_incremental(rig.olap)  # the psql user
        except psycopg.Error as exc:
            refusal = exc
        took_over = wc.scalar(
            rig.olap, "SELECT status = 'failed' FROM etl.run WHERE run_id = %s", (run_id,)
        )
        if took_over:
            assert refusal is None, f"took the DAG run over, then failed: {refusal}"
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="superseded"):
                dag.execute(f"CALL {steps[6]}(%s)", (run_id,))
        else:
            for step in steps[6:]:
                dag.execute(f"CALL {step}(%s)", (run_id,))
            wc.run_incremental(rig.olap)
    status = wc.scalar(rig.olap, "SELECT status FROM etl.run WHERE run_id = %s", (run_id,))
    assert status == ("failed" if took_over else "succeeded")
    assert wc.last_run(rig.olap)[2] == "succeeded"
    assert fact_stage(rig.olap, deals[0]) == "Won"
    assert wc.scalar(
        rig.olap,
        "SELECT close_value FROM dwh.fact_sales_performance WHERE opportunity_id = %s",
        (deals[0],),
    ) == Decimal(999)
    assert_matches_a_fresh_load(rig)


def test_changes_committed_while_the_initial_load_runs_reach_the_first_window(rig: Rig) -> None:
    deals = deal_ids(rig.oltp, "Prospecting", 2, offset=5)
    early = writer_conn(rig.oltp)
    pause = wc.PausePoint(rig.olap).at_step("dwh.load_dim_date")
    try:
        early.execute("BEGIN")  # wrote before the extract's snapshot, commits after it
        early.execute(
            "UPDATE public.sales_pipeline SET deal_stage = 'Engaging', engage_date = DATE"
            " '2017-10-12' WHERE opportunity_id = %s",
            (deals[0],),
        )
        early.execute("UPDATE public.products SET sales_price = 4444 WHERE product_id = 4")
        pause.hold()
        load = wc.BackgroundCall(rig.olap, "CALL etl.run_initial_load()")
        pause.wait_until_paused(load)
        early.execute("COMMIT")
        with writer_conn(rig.oltp) as conn:
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Engaging', engage_date = DATE"
                " '2017-10-13' WHERE opportunity_id = %s",
                (deals[1],),
            )
        pause.release()
        assert load.join() == "finished"
    finally:
        pause.close()
        early.close()
    assert fact_stage(rig.olap, deals[0]) == "Prospecting"
    wc.run_incremental(rig.olap)
    assert fact_stage(rig.olap, deals[0]) == "Engaging"
    assert fact_stage(rig.olap, deals[1]) == "Engaging"
    assert price_history(rig.olap, 4)[-1] == 4444
    assert_matches_a_fresh_load(rig)


def test_an_incremental_call_while_an_initial_load_is_between_steps_leaves_it_alone(
    loaded: Rig,
) -> None:
    """The initial load DAG runs one task per step; between two tasks nobody holds the
    pipeline lock. The incremental DAG (every 15 minutes) or a psql user calling then may
    wait or exit with a clear message, but the initial load must be able to go on: not be
    cut off half-way with the star schema cleared and no way to resume it."""
    rig = loaded
    steps = list(wc.INITIAL_STEPS)
    with psycopg.connect(rig.olap, autocommit=True) as dag:
        run_id = dag.execute("CALL etl.start_run('initial_load', NULL, NULL)").fetchone()[0]
        for step in steps[:3]:
            dag.execute(f"CALL {step}(%s)", (run_id,))
        incremental = wc.BackgroundCall(rig.olap, "CALL etl.run_incremental_update()")
        incremental.thread.join(2)
        if not incremental.thread.is_alive():  # it did not wait: it must have refused
            assert isinstance(incremental.outcome, psycopg.Error), incremental.outcome
        for step in steps[3:]:
            dag.execute(f"CALL {step}(%s)", (run_id,))
    incremental.join()
    assert wc.scalar(rig.olap, "SELECT status FROM etl.run WHERE run_id = %s", (run_id,)) == (
        "succeeded"
    )
    wc.run_incremental(rig.olap)
    assert_matches_a_fresh_load(rig)


# --- free-running writers and runs ------------------------------------------------------------

QUICK_WRITERS = 3
QUICK_TRANSACTIONS = 60
LONG_TRANSACTIONS = 3


@dataclass
class Writer:
    """One writer's share of the source: every W-th deal, one account, one product, agents
    with id % W == its number; and what it committed to its product, in order."""

    number: int
    conn: psycopg.Connection
    rng: random.Random
    deals: list[str]
    price: Decimal  # the product's list price now
    gone: list[str] = field(default_factory=list)
    prices: list[Decimal] = field(default_factory=list)  # committed list prices, in order
    created: int = 0
    committed: int = 0

    @property
    def product(self) -> int:
        return self.number + 1

    @property
    def account(self) -> int:
        return self.number + 1

    def agent(self) -> int:
        return self.rng.randrange(35 // WRITERS) * WRITERS + self.number + 1

    def change(self) -> None:
        """One change to the writer's own rows (it never waits for another writer)."""
        rng, conn = self.rng, self.conn
        kind = rng.choice(("stage", "stage", "value", "insert", "delete", "back", "account"))
        if kind == "insert" or (kind in ("stage", "value", "delete") and not self.deals):
            self.created += 1
            deal = f"CW{self.number}-{self.created}"
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES (%s, %s, %s, NULL, 'Prospecting',"
                " NULL, NULL, NULL)",
                (deal, self.agent(), rng.randint(1, 7)),
            )
            self.deals.append(deal)
        elif kind == "back" and self.gone:
            deal = self.gone.pop(rng.randrange(len(self.gone)))
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES (%s, %s, %s, %s, 'Won',"
                " DATE '2017-02-02', DATE '2017-03-03', %s)",
                (deal, self.agent(), rng.randint(1, 7), self.account, rng.randint(1, 9999)),
            )
            self.deals.append(deal)
        elif kind == "delete":
            deal = self.deals.pop(rng.randrange(len(self.deals)))
            conn.execute("DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (deal,))
            self.gone.append(deal)
        elif kind == "account":
            conn.execute(
                "UPDATE public.accounts SET revenue = %s, employees = %s WHERE account_id = %s",
                (rng.randint(1, 9999), rng.randint(1, 999), self.account),
            )
        else:
            deal = rng.choice(self.deals)
            stage = rng.choice(("Prospecting", "Engaging", "Won", "Lost"))
            month = rng.randint(1, 12)
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = %s,"
                " engage_date = CASE WHEN %s = 'Prospecting' THEN NULL ELSE DATE '2017-01-15' END,"
                " close_date = CASE WHEN %s IN ('Won', 'Lost') THEN make_date(2017, %s, 20) END,"
                " close_value = CASE %s WHEN 'Won' THEN %s WHEN 'Lost' THEN 0 END,"
                " sales_agent_id = %s, account_id = %s WHERE opportunity_id = %s",
                (
                    stage,
                    stage,
                    stage,
                    month,
                    stage,
                    rng.randint(1, 9999),
                    self.agent(),
                    rng.choice((None, self.account)),
                    deal,
                ),
            )

    def reprice(self) -> Decimal:
        price = Decimal(self.rng.randint(100, 99_999)) / 100
        while price == self.price:
            price += 1
        self.conn.execute(
            "UPDATE public.products SET sales_price = %s WHERE product_id = %s",
            (price, self.product),
        )
        return price

    def transaction(self, between: Callable[[], None] | None = None) -> None:
        """A few changes in one transaction, sometimes a new list price; `between` runs
        before the commit (a long writer waits there)."""
        price = None
        with self.conn.transaction():
            for _ in range(self.rng.randint(1, 4)):
                self.change()
            if self.rng.random() < 0.3:
                price = self.reprice()
            if between is not None:
                between()
        self.committed += 1
        if price is not None:
            self.prices.append(price)
            self.price = price


WRITERS = QUICK_WRITERS + 1


def test_writers_racing_incremental_runs_lose_nothing(loaded: Rig) -> None:
    rig = loaded
    all_deals = sorted(
        r[0] for r in wc.fetch(rig.oltp, "SELECT opportunity_id FROM public.sales_pipeline")
    )
    initial_prices = {p: current_price(rig.olap, p) for p in range(1, WRITERS + 1)}
    writers = [
        Writer(
            n,
            writer_conn(rig.oltp),
            random.Random(f"writer {n}"),
            all_deals[n::WRITERS],
            initial_prices[n + 1],
        )
        for n in range(WRITERS)
    ]
    runner = Runner(rig.olap)
    stop = threading.Event()

    def quick(w: Writer) -> Callable[[], None]:
        def work() -> None:
            for _ in range(QUICK_TRANSACTIONS):
                w.transaction()
                stop.wait(w.rng.uniform(0, 0.04))

        return work

    def long(w: Writer) -> Callable[[], None]:
        def work() -> None:
            for _ in range(LONG_TRANSACTIONS):
                target = runner.completed + 2
                w.transaction(between=lambda t=target: runner.wait_for(t))

        return work

    loop = threading.Thread(target=runner.loop, args=(stop,), daemon=True)
    threads = [Worker(quick(w)) for w in writers[:QUICK_WRITERS]]
    threads.append(Worker(long(writers[-1])))
    loop.start()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(TIMEOUT * 2)
    finally:
        stop.set()
        loop.join(TIMEOUT)
        for w in writers:
            w.conn.close()
    assert not runner.errors, runner.errors
    assert runner.completed >= 2 * LONG_TRANSACTIONS
    runner.run_once()
    print(
        f"\n{sum(w.committed for w in writers)} writer transactions,"
        f" {runner.completed} incremental runs"
    )

    assert_matches_a_fresh_load(rig)
    for w in writers:
        history = price_history(rig.olap, w.product)
        assert history == [initial_prices[w.product], *w.prices], (
            f"product {w.product}: warehouse {history}, committed {w.prices}"
        )
    deleted = wc.deleted_members(rig.olap)["sales_pipeline"]
    gone = {d for w in writers for d in w.gone if d in all_deals}
    assert gone <= deleted, sorted(gone - deleted)
