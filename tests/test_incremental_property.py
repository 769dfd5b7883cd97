"""Property: whatever sequence of committed changes the source goes through, the incremental
update ends where a fresh initial load of the final source ends.

Each example starts from a generated source and an initial load, then applies a random
sequence of batches; a batch is a few transactions of a few changes each (deal inserts,
stage moves, edits, deletes, re-inserts of a deleted key, a deal moved to a stage the
warehouse does not know or spelt in another case; SCD1 changes, inserts, deletes and
re-inserts of accounts and agents; SCD2 changes of a product's series or price, renames,
no-op updates, inserts, deletes and re-inserts of products; a change often hits the same
row as the one before it, so one row changes several times in one transaction and in one
window), and `CALL etl.run_incremental_update()` runs after each batch.

At the end, a second warehouse reading the same source does `CALL etl.run_initial_load()`;
the two must show the same live content by business keys, and the source itself
(warehouse_compare.assert_same_live_content). The incremental warehouse must also keep its
own rules (warehouse_compare.assert_consistent); its SCD2 history must hold exactly one
version per committed transaction that changed a product's series or price (or brought it
back), as this test counts them; its deal history must be what a replay of the committed
changes gives (tests/history_oracle.py) and its as-of summaries what that history gives; and
every deal, account, agent or product that reached the warehouse and is gone from the source
must still be there, marked deleted.

Examples are derandomized (the same ones every run) and not shrunk, to keep the module
short and repeatable; PROPERTY_EXAMPLES=N, PROPERTY_RANDOM=1 and PROPERTY_SHRINK=1 change
that when hunting.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

import dbtools
import history_oracle as ho
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.02  # 176 deals, 2 accounts, 35 agents, 7 products
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "25"))
DAY0 = date(2016, 10, 20)

KEYS = {
    "accounts": "account_id",
    "sales_agents": "sales_agent_id",
    "products": "product_id",
    "sales_pipeline": "opportunity_id",
}
COLUMNS = {
    "accounts": (
        "account_name",
        "sector",
        "year_established",
        "revenue",
        "employees",
        "office_location",
        "parent_account_id",
    ),
    "sales_agents": ("sales_agent_name", "manager_name", "regional_office"),
    "products": ("product_name", "series", "sales_price"),
    "sales_pipeline": (
        "sales_agent_id",
        "product_id",
        "account_id",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
}
STAGES = wc.KNOWN_STAGES
# Stages as a CRM may spell them: unknown to the warehouse (the deal is a live fact on the
# Unknown stage, listed as a data-quality issue), or a known one in another case or spacing.
ODD_STAGES = ("Negotiation", " won", "LOST ", "engaging")
SECTORS = ("retail", "software", "medical", "finance", "marketing", "technolgy", None)
COUNTRIES = ("United States", "Germany", "Japan", "Kenya", "Brazil", None)
OFFICES = ("Central", "East", "West", "North")
SERIES = ("GTX", "MG", "GTK", "HYP", None)


# --- a model of the source, and what the warehouse must make of it ---------------------------


@dataclass
class Model:
    rows: dict[str, dict]  # table -> key -> {column: value}
    gone: dict[str, set] = field(default_factory=dict)  # keys deleted and not back
    # Product SCD2 history as this test expects it: [series, price, status] per version.
    versions: dict[int, list[list]] = field(default_factory=dict)
    # Keys that were in the source (deals: with a known stage) when a load or run read it.
    reached: dict[str, set] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(100_000))
    changes: int = 0
    transactions: int = 0

    @classmethod
    def read(cls, conn: psycopg.Connection) -> Model:
        rows = {}
        for table, key in KEYS.items():
            cols = COLUMNS[table]
            rows[table] = {
                r[0]: dict(zip(cols, r[1:], strict=True))
                for r in conn.execute(f"SELECT {key}, {', '.join(cols)} FROM public.{table}")
            }
        model = cls(rows, gone={t: set() for t in KEYS}, reached={t: set() for t in KEYS})
        for pid, p in rows["products"].items():
            model.versions[pid] = [[p["series"], p["sales_price"], "current"]]
        model.mark_reached()
        return model

    def mark_reached(self) -> None:
        for table, rows in self.rows.items():
            self.reached[table] |= set(rows)

    def product_states(self) -> dict[int, tuple]:
        live = {k: (True, p["series"], p["sales_price"]) for k, p in self.rows["products"].items()}
        return {**{k: (False, None, None) for k in self.versions}, **live}

    def close_transaction(self, before: dict[int, tuple]) -> None:
        """One committed transaction: one new version per product whose series or price it
        changed (net) or that it brought (back) to life; a delete closes the version."""
        self.transactions += 1
        after = self.product_states()
        for pid, (live, series, price) in after.items():
            was_live, was_series, was_price = before.get(pid, (False, None, None))
            history = self.versions.setdefault(pid, [])
            if live and (not was_live or (series, price) != (was_series, was_price)):
                if history and history[-1][2] == "current":
                    history[-1][2] = "closed"
                history.append([series, price, "current"])
            elif was_live and not live:
                history[-1][2] = "deleted"

    def expected_histories(self) -> dict[int, list[tuple]]:
        return {pid: [tuple(v) for v in h] for pid, h in self.versions.items() if h}


@dataclass
class Tx:
    """The transaction being written: its connection, the model, and the row each table's
    last change touched (a change may hit the same row again)."""

    conn: psycopg.Connection
    model: Model
    last: dict[str, object] = field(default_factory=dict)
    original: dict[tuple, dict] = field(default_factory=dict)  # rows as the transaction found them

    def live(self, table: str) -> dict:
        return self.model.rows[table]

    def choose(
        self, table: str, pick: int, same: bool, where: Callable[[dict], bool] | None = None
    ) -> object | None:
        rows = self.live(table)
        last = self.last.get(table)
        if same and last in rows and (where is None or where(rows[last])):
            return last
        keys = sorted((k for k, r in rows.items() if where is None or where(r)), key=str)
        return keys[pick % len(keys)] if keys else None

    def _run(self, statement: str, params: tuple) -> int:
        note(f"  {statement} {params}")
        return self.conn.execute(statement, params).rowcount

    def insert(self, table: str, key: object, values: dict) -> None:
        cols = (KEYS[table], *values)
        self._run(
            f"INSERT INTO public.{table} ({', '.join(cols)})"
            f" VALUES ({', '.join(['%s'] * len(cols))})",
            (key, *values.values()),
        )
        self.live(table)[key] = dict(values)
        self.model.gone[table].discard(key)
        self.model.changes += 1
        self.last[table] = key

    def update(self, table: str, key: object, values: dict) -> None:
        self.original.setdefault((table, key), dict(self.live(table)[key]))
        sets = ", ".join(f"{c} = %s" for c in values)
        self._run(
            f"UPDATE public.{table} SET {sets} WHERE {KEYS[table]} = %s", (*values.values(), key)
        )
        self.live(table)[key].update(values)
        self.model.changes += 1
        self.last[table] = key

    def update_where(self, table: str, column: str, old: object, new: object) -> None:
        """Every row of table whose column is old gets new (one statement)."""
        n = self._run(f"UPDATE public.{table} SET {column} = %s WHERE {column} = %s", (new, old))
        for row in self.live(table).values():
            if row[column] == old:
                row[column] = new
        self.model.changes += n

    def delete(self, table: str, key: object) -> None:
        self._run(f"DELETE FROM public.{table} WHERE {KEYS[table]} = %s", (key,))
        del self.live(table)[key]
        self.model.gone[table].add(key)
        self.model.changes += 1
        self.last[table] = key

    def new_id(self) -> int:
        return next(self.model.ids)

    def gone_key(self, table: str, pick: int, same: bool) -> object | None:
        """A deleted key to bring back: the one just deleted when `same`."""
        gone = sorted(self.model.gone[table], key=str)
        if same and self.last.get(table) in self.model.gone[table]:
            return self.last[table]
        return gone[pick % len(gone)] if gone else None


# --- the changes ------------------------------------------------------------------------------


def some_date(rng: random.Random) -> date:
    return DAY0 + timedelta(days=rng.randint(-150, 800))


def money(rng: random.Random, low: int = 50, high: int = 30_000) -> Decimal:
    value = Decimal(rng.randint(low, high))
    if rng.random() < 0.3:  # cents, now and then fractions of a cent (stored rounded)
        value += Decimal(rng.randint(1, 999)) / (100 if rng.random() < 0.7 else 1000)
    return value


def deal_values(tx: Tx, rng: random.Random, stage: str, deal: dict | None = None) -> dict:
    """Dates, value and account that fit a stage (mostly: the CRM is not strict)."""
    engage = deal["engage_date"] if deal and deal["engage_date"] else some_date(rng)
    accounts = sorted(tx.live("accounts"))
    account = deal["account_id"] if deal else None
    if stage == "Prospecting":
        engage, close, value = None, None, None
    elif stage == "Engaging":
        close, value = None, None
        if rng.random() < 0.1:
            engage = None
    else:
        if rng.random() < 0.05:
            engage = None
        close = (engage or some_date(rng)) + timedelta(days=rng.randint(0, 140))
        value = money(rng) if stage == "Won" else Decimal(0)
        if account is None and accounts and rng.random() < 0.9:
            account = rng.choice(accounts)
    if stage in ("Prospecting", "Engaging") and accounts and rng.random() < 0.3:
        account = rng.choice([*accounts, None])
    return {
        "account_id": account,
        "deal_stage": stage,
        "engage_date": engage,
        "close_date": close,
        "close_value": value,
    }


def new_deal(tx: Tx, rng: random.Random, pick: int) -> dict | None:
    agent = tx.choose("sales_agents", pick, False)
    product = tx.choose("products", pick // 7, False)
    if agent is None or product is None:
        return None
    stage = rng.choice(STAGES)
    return {"sales_agent_id": agent, "product_id": product, **deal_values(tx, rng, stage)}


def deal_insert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    deal = new_deal(tx, rng, pick)
    if deal is not None:
        tx.insert("sales_pipeline", f"HYP{tx.new_id()}", deal)


def deal_reinsert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.gone_key("sales_pipeline", pick, same)
    deal = new_deal(tx, rng, pick)
    if key is None or deal is None:
        deal_insert(tx, pick, rng, same)
        return
    tx.insert("sales_pipeline", key, deal)


def deal_move(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("sales_pipeline", pick, same)
    if key is None:
        return
    deal = tx.live("sales_pipeline")[key]
    stage = rng.choice([s for s in STAGES if s != deal["deal_stage"]])
    tx.update("sales_pipeline", key, deal_values(tx, rng, stage, deal))


def deal_edit(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("sales_pipeline", pick, same)
    if key is None:
        return
    deal = tx.live("sales_pipeline")[key]
    what = rng.choice(("value", "close_date", "agent", "product", "account"))
    if what == "value":
        change = {"close_value": money(rng) if deal["deal_stage"] != "Lost" else Decimal(0)}
    elif what == "close_date":
        base = deal["close_date"] or some_date(rng)
        change = {"close_date": base + timedelta(days=rng.choice((-40, -1, 1, 31, 45)))}
    elif what == "agent":
        change = {"sales_agent_id": tx.choose("sales_agents", rng.randrange(1000), False)}
    elif what == "product":
        change = {"product_id": tx.choose("products", rng.randrange(1000), False)}
    else:
        accounts = sorted(tx.live("accounts"))
        change = {"account_id": rng.choice([*accounts, None])}
    tx.update("sales_pipeline", key, change)


def deal_delete(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("sales_pipeline", pick, same)
    if key is not None:
        tx.delete("sales_pipeline", key)


def deal_unknown_stage(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("sales_pipeline", pick, same)
    if key is not None:
        tx.update("sales_pipeline", key, {"deal_stage": rng.choice(ODD_STAGES)})


def account_values(tx: Tx, rng: random.Random, n: int) -> dict:
    parents = sorted(tx.live("accounts"))
    return {
        "account_name": f"Hyp Account {n}",
        "sector": rng.choice(SECTORS),
        "year_established": rng.choice((1979, 1995, 2001, 2012, None)),
        "revenue": money(rng, 1, 9_000),
        "employees": rng.choice((12, 250, 4_001, None)),
        "office_location": rng.choice(COUNTRIES),
        "parent_account_id": rng.choice([*parents, None, None]) if parents else None,
    }


def account_update(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("accounts", pick, same)
    if key is None:
        return
    fresh = account_values(tx, rng, tx.new_id())
    columns = rng.choice(
        (
            ("sector",),
            ("revenue", "employees"),
            ("office_location",),
            ("year_established",),
            ("account_name",),
            ("parent_account_id",),
            tuple(fresh),
        )
    )
    tx.update("accounts", key, {c: fresh[c] for c in columns})


def account_insert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.new_id()
    tx.insert("accounts", key, account_values(tx, rng, key))


def account_reinsert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.gone_key("accounts", pick, same)
    if key is None:
        account_insert(tx, pick, rng, same)
        return
    tx.insert("accounts", key, account_values(tx, rng, tx.new_id()))


def account_delete(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    """The CRM removes an account: its deals lose it, its subsidiaries their parent."""
    key = tx.choose("accounts", pick, same)
    if key is None:
        return
    tx.update_where("sales_pipeline", "account_id", key, None)
    tx.update_where("accounts", "parent_account_id", key, None)
    tx.delete("accounts", key)


def agent_values(rng: random.Random, n: int) -> dict:
    return {
        "sales_agent_name": f"Hyp Agent {n}",
        "manager_name": rng.choice(("Dustin Brinkmann", "Celia Rouche", "Hyp Manager", None)),
        "regional_office": rng.choice(OFFICES),
    }


def agent_update(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("sales_agents", pick, same)
    if key is None:
        return
    fresh = agent_values(rng, tx.new_id())
    columns = rng.choice(
        (("manager_name",), ("regional_office",), ("manager_name", "regional_office"), tuple(fresh))
    )
    tx.update("sales_agents", key, {c: fresh[c] for c in columns})


def agent_insert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    tx.insert("sales_agents", tx.new_id(), agent_values(rng, tx.new_id()))


def agent_reinsert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.gone_key("sales_agents", pick, same)
    if key is None:
        agent_insert(tx, pick, rng, same)
        return
    tx.insert("sales_agents", key, agent_values(rng, tx.new_id()))


def agent_delete(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    """An agent leaves: their deals go to another agent first."""
    if len(tx.live("sales_agents")) < 2:
        return
    key = tx.choose("sales_agents", pick, same)
    others = [k for k in sorted(tx.live("sales_agents")) if k != key]
    heir = others[rng.randrange(len(others))]
    tx.update_where("sales_pipeline", "sales_agent_id", key, heir)
    tx.delete("sales_agents", key)


def product_values(rng: random.Random, n: int) -> dict:
    return {
        "product_name": f"Hyp Product {n}",
        "series": rng.choice(SERIES),
        "sales_price": money(rng, 20, 30_000),
    }


def product_update(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    """SCD2: series and/or list price; sometimes a value it already has, or back to what it was
    when the transaction began (either way no new version)."""
    key = tx.choose("products", pick, same)
    if key is None:
        return
    product = tx.live("products")[key]
    what = rng.choice(("price", "price", "series", "both", "same", "back"))
    fresh = product_values(rng, 0)
    if what == "price":
        change = {"sales_price": fresh["sales_price"]}
    elif what == "series":
        change = {"series": rng.choice([s for s in SERIES if s != product["series"]])}
    elif what == "both":
        change = {"series": fresh["series"], "sales_price": fresh["sales_price"]}
    else:
        was = tx.original.get(("products", key), product) if what == "back" else product
        change = {"sales_price": was["sales_price"], "series": was["series"]}
    tx.update("products", key, change)


def product_rename(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.choose("products", pick, same)
    if key is not None:
        tx.update("products", key, {"product_name": f"Hyp Product {tx.new_id()}"})


def product_insert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    tx.insert("products", tx.new_id(), product_values(rng, tx.new_id()))


def product_reinsert(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    key = tx.gone_key("products", pick, same)
    if key is None:
        product_insert(tx, pick, rng, same)
        return
    tx.insert("products", key, product_values(rng, tx.new_id()))


def product_delete(tx: Tx, pick: int, rng: random.Random, same: bool) -> None:
    """A product is withdrawn: its deals move to another product first."""
    if len(tx.live("products")) < 2:
        return
    key = tx.choose("products", pick, same)
    others = [k for k in sorted(tx.live("products")) if k != key]
    heir = others[rng.randrange(len(others))]
    tx.update_where("sales_pipeline", "product_id", key, heir)
    tx.delete("products", key)


# Repeated names weigh a kind: deals change most, products least.
KINDS: dict[str, Callable[[Tx, int, random.Random, bool], None]] = {
    f.__name__: f
    for f in (
        deal_insert,
        deal_reinsert,
        deal_move,
        deal_edit,
        deal_delete,
        deal_unknown_stage,
        account_update,
        account_insert,
        account_reinsert,
        account_delete,
        agent_update,
        agent_insert,
        agent_reinsert,
        agent_delete,
        product_update,
        product_rename,
        product_insert,
        product_reinsert,
        product_delete,
    )
}
WEIGHTED_KINDS = (
    ["deal_insert"] * 4
    + ["deal_reinsert"] * 2
    + ["deal_move"] * 6
    + ["deal_edit"] * 3
    + ["deal_delete"] * 3
    + ["deal_unknown_stage"]
    + ["account_update"] * 3
    + ["account_insert", "account_reinsert", "account_delete"]
    + ["agent_update"] * 2
    + ["agent_insert", "agent_reinsert", "agent_delete"]
    + ["product_update"] * 5
    + ["product_rename", "product_insert", "product_reinsert", "product_delete"]
)

# (kind, which row, the values' random stream, same row as the previous change of that table)
change = st.tuples(
    st.sampled_from(WEIGHTED_KINDS),
    st.integers(0, 10_000),
    st.integers(0, 2**16),
    st.booleans(),
)
transaction = st.lists(change, min_size=1, max_size=5)
batch = st.lists(transaction, min_size=1, max_size=5)
sequence = st.lists(batch, min_size=1, max_size=5)


def apply_transaction(conn: psycopg.Connection, model: Model, changes: list[tuple]) -> None:
    before = model.product_states()
    tx = Tx(conn, model)
    with conn.transaction():
        for kind, pick, seed, same in changes:
            KINDS[kind](tx, pick, random.Random(seed), same)
    model.close_transaction(before)


# --- the test ---------------------------------------------------------------------------------


@dataclass
class Rig:
    pair: dbtools.Warehouse
    fresh_dsn: str
    stats: dict = field(default_factory=lambda: dict.fromkeys(("examples", "changes", "tx"), 0))


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    """The module's source and incremental warehouse, and a second warehouse on the same
    source that only ever does initial loads."""
    name, fresh_dsn = wc.attach_warehouse(warehouse.oltp_dsn, "property_fresh")
    r = Rig(warehouse, fresh_dsn)
    yield r
    print(
        f"\nproperty: {r.stats['examples']} examples, {r.stats['tx']} transactions,"
        f" {r.stats['changes']} row changes"
    )
    dbtools.drop_database(name)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("PROPERTY_RANDOM"),
    phases=(
        [Phase.explicit, Phase.reuse, Phase.generate]
        + ([Phase.shrink] if os.environ.get("PROPERTY_SHRINK") else [])
    ),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches=sequence, batch_size=st.sampled_from([None, 1]))
# Explicit examples run first. A product changed by two transactions of one window, then
# deleted, then back and changed again:
@example(
    batches=[
        [[("product_update", 0, 1, False)], [("product_update", 0, 2, False)]],
        [[("product_delete", 0, 3, False)]],
        [[("product_reinsert", 0, 4, False)], [("product_update", 0, 7, False)]],
    ],
    batch_size=None,
)
# One row changed several times in one transaction (a deal moved, edited, deleted and
# re-inserted; a price changed and put back: no version; an account edited twice), a deal
# deleted in one window and back in the next:
@example(
    batches=[
        [
            [
                ("deal_move", 5, 11, False),
                ("deal_edit", 0, 12, True),
                ("deal_delete", 0, 0, True),
                ("deal_reinsert", 0, 13, True),
            ],
            [
                ("product_update", 2, 1, False),
                ("product_update", 2, 19, True),
                ("account_update", 0, 5, False),
                ("account_update", 0, 6, True),
            ],
        ],
        [[("deal_delete", 7, 0, False)]],
        [[("deal_reinsert", 0, 14, False)]],
    ],
    batch_size=None,
)
# Members removed and brought back: an account (its deals lose it), an agent (deals move);
# fact batches of one heap block.
@example(
    batches=[
        [[("account_delete", 0, 0, False)], [("agent_delete", 3, 0, False)]],
        [[("account_reinsert", 0, 8, False), ("agent_reinsert", 0, 9, False)]],
    ],
    batch_size=1,
)
def test_incremental_updates_end_where_a_fresh_load_ends(
    rig: Rig, batches: list, batch_size: int | None
) -> None:
    oltp, olap = rig.pair.oltp_dsn, rig.pair.olap_dsn
    generate.generate(oltp, SCALE)  # replaces the source: the initial load starts over
    wc.run_initial(olap)
    initial_deals = ho.source_deals(oltp)  # the deal history's seed comes from these
    with psycopg.connect(oltp, autocommit=True) as conn:
        model = Model.read(conn)
        for n, transactions in enumerate(batches, 1):
            note(f"batch {n}:")
            for changes in transactions:
                apply_transaction(conn, model, changes)
            wc.run_incremental(olap, batch_size)
            assert not wc.latest_run_problems(olap), wc.latest_run_problems(olap)
            model.mark_reached()
    rig.stats["examples"] += 1
    rig.stats["changes"] += model.changes
    rig.stats["tx"] += model.transactions

    wc.run_initial(rig.fresh_dsn)
    wc.assert_same_live_content(olap, rig.fresh_dsn, oltp)
    wc.assert_consistent(olap)

    # The deal history is what a replay of the committed changes gives, and its summaries
    # what the history gives.
    problems = ho.history_differences(olap, ho.expected_history(oltp, olap, initial_deals))
    problems += ho.summary_differences(olap)
    assert not problems, "deal history differs from the replay:\n  " + "\n  ".join(problems)

    wrong = wc.history_differences(wc.product_histories(olap), model.expected_histories())
    assert not wrong, "SCD2 history is not one version per changing transaction:\n  " + (
        "\n  ".join(wrong)
    )

    deleted = wc.deleted_members(olap)
    for table in ("sales_pipeline", "accounts", "sales_agents", "products"):
        live = set(model.rows[table])
        missing = wc.keys_missing(model.reached[table] - live, deleted[table])
        assert not missing, f"{table}: gone from the source, not marked deleted: {missing}"
        assert not (deleted[table] & live), f"{table}: live keys marked deleted"
