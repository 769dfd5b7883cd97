"""Model-based test: whatever statements the CRM issues, in whatever transactions, and
whoever calls the pipeline when, the incremental warehouse ends each run where a fresh
initial load of the same source ends.

A hypothesis state machine drives the source on several connections at once. Its rules are
the statement shapes the CRM (the superuser, or role b2b_app) may legally issue on the four
source tables: single- and multi-row INSERT, UPDATE and DELETE; writable CTEs in both orders
(a DELETE ... RETURNING feeding the INSERT of the same key; an INSERT feeding an UPDATE or
DELETE of other rows, or a DELETE of its own key, which cannot see it; an UPDATE in a CTE
with a DELETE of another row in the main statement); MERGE with matched update, matched
delete and not-matched insert; primary-key updates, one row or several, and swaps of two
keys (three statements through a spare key; in one statement, which the source refuses);
delete and re-insert of one key in one transaction and across transactions; statements that
the source refuses (a delete of a referenced row), rolled back to a savepoint and counted
apart. The CRM's archive of closed deals (public.sales_pipeline_archive, with
sales_pipeline's foreign keys; the superuser's, a DBA's: b2b_app is refused, 42501): `CALL
public.archive_closed_deals(cut-off, batch)` outside any transaction (it commits each small
batch; it moves every committed deal whose stage folds to Won or Lost and that closed before
a cut-off drawn from the deals' close dates, except those an open transaction updated,
deleted or locked, which SKIP LOCKED leaves); the same move as one statement in a
transaction that may stay open (WITH moved AS (DELETE FROM sales_pipeline ... RETURNING *)
INSERT INTO the archive); deals locked by SELECT ... FOR UPDATE (or a weaker mode) in an
open transaction; `CALL public.restore_archived_deals(ids)` and the reverse statement in a
transaction (the CALL refused, P0002, for an id not archived); a DELETE from the archive
(the deal is gone); an UPDATE of archived deals (archived_at too); an agent, product or
account the CRM tries to retire (its closed deals archived, its open ones handed to
another, then its DELETE: refused, 23503, while archived deals name it, as while live ones
do). Deal
stages come in other spellings too (" WON ", "Lo-st", fullwidth), which the warehouse and
the routine fold. Transactions stay open across other rules on up to three connections,
commit in any order or roll back. Other rules call the pipeline:
`CALL etl.run_incremental_update()` (open transactions included: it must not see them, the
next run must), a horizon move (`etl.config` cold_horizon set to a close date, 'none' or an
interval, then `CALL etl.run_horizon_move(batch)`: facts change parts, not content), two
callers at once (exactly one runs, the other waits or is refused with
55P03; nothing left running or locked), and a rarely-running second warehouse on the same
source (a lagging consumer: the purge must wait for it, or its run must be refused with
55000 and a hint to reload; never silently stale).

The model is a Python copy of the source: the committed rows (the archive's too, archived_at
left out), and per open transaction its own writes over them. Open transactions never touch the
same rows or each other's foreign-key parents (so nobody waits for a row lock; an archived row
keeps others off the parents it names as if it had foreign keys), which keeps the model exact;
a deal is in sales_pipeline or in the archive, never both. The model is compared with the source
after every commit (a mismatch there is a bug of this test, reported as such) and after every
CALL of the archive's routines (there the mismatch is what the routine did against what the
model expected it to do).

After every run: the warehouse shows what a fresh initial load of the same source shows
(a third warehouse, initial loads only) and the source itself (b2bdwh.compare: archived deals
live, with their archived_at, a parent the source no longer holds as Unknown); it keeps its own
rules, aggregate included (warehouse_compare.assert_consistent); its SCD2 product history is one
version per committed transaction that changed a product's series or price or brought it
back, valid from one of that transaction's changed_at times for that product, the current
one live, none current for a deleted product; its deal history is what a replay of the
committed changes gives (tests/history_oracle.py, over the change log rows seen before each run:
the source purges what was applied; the archive's changes are the deal's) and its as-of
summaries what that history gives; every key gone from the source (a deal: in neither
sales_pipeline nor the archive) that reached the warehouse is marked deleted and no live key
(an archived deal included) is; no run is left 'running' and nobody holds the pipeline lock.

A failure shows the steps of its example, each rule's statements (hypothesis notes, tagged
with the transaction and connection) printed just before the `state.<rule>(...)` line they
belong to. Derandomized by default (the same examples every run), not shrunk:
MODEL_EXAMPLES, MODEL_STEPS, MODEL_RANDOM=1 and MODEL_SHRINK=1 change that when hunting;
MODEL_RULES_OFF=rule,rule leaves rules out (to look past a known failure). A race found by
the two-callers rule may not repeat when hypothesis replays the example: it is then reported
as a FlakyFailure whose sub-exception is the failure.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import dbtools
import history_oracle as ho
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.02  # 176 deals, 2 accounts, 35 agents, 7 products
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("MODEL_STEPS", "70"))
SLOTS = 3  # connections that may hold a transaction open across rules
LAG = 3  # the lagging warehouse runs only after this many runs of the main one
# Rules to leave out (names, comma-separated): to look past a known failure.
OFF = set(filter(None, os.environ.get("MODEL_RULES_OFF", "").split(",")))

KEYS = {
    "accounts": "account_id",
    "products": "product_id",
    "sales_agents": "sales_agent_id",
    "sales_pipeline": "opportunity_id",
}
# Every column with its type (the key first): casts for VALUES lists.
TYPES = {
    "accounts": {
        "account_id": "integer",
        "account_name": "text",
        "sector": "text",
        "year_established": "integer",
        "revenue": "numeric",
        "employees": "integer",
        "office_location": "text",
        "parent_account_id": "integer",
    },
    "products": {
        "product_id": "integer",
        "product_name": "text",
        "series": "text",
        "sales_price": "numeric",
    },
    "sales_agents": {
        "sales_agent_id": "integer",
        "sales_agent_name": "text",
        "manager_name": "text",
        "regional_office": "text",
    },
    "sales_pipeline": {
        "opportunity_id": "text",
        "sales_agent_id": "integer",
        "product_id": "integer",
        "account_id": "integer",
        "deal_stage": "text",
        "engage_date": "date",
        "close_date": "date",
        "close_value": "numeric",
    },
}
COLUMNS = {t: tuple(c for c in types if c != KEYS[t]) for t, types in TYPES.items()}
# (child table, column) -> parent table
FKS = {
    ("sales_pipeline", "sales_agent_id"): "sales_agents",
    ("sales_pipeline", "product_id"): "products",
    ("sales_pipeline", "account_id"): "accounts",
    ("accounts", "parent_account_id"): "accounts",
}
TABLES = tuple(KEYS)
PARENT_TABLES = ("accounts", "products", "sales_agents")
DEALS = "sales_pipeline"
# The CRM's archive of closed deals: the deals' columns (and archived_at, which the source sets
# and the model leaves out) and their foreign keys. A deal is in sales_pipeline or here, never
# in both (sales_pipeline refuses an archived key).
ARCHIVE = "sales_pipeline_archive"
COLUMNS[ARCHIVE] = COLUMNS[DEALS]
STORED = {**KEYS, ARCHIVE: KEYS[DEALS]}  # every table the model holds, with its key
FKS.update({(ARCHIVE, column): parent for (t, column), parent in list(FKS.items()) if t == DEALS})
STAGES = wc.KNOWN_STAGES
# Other spellings of the stages, which the warehouse (and the archiving routine) read as the
# stage once case, spaces and punctuation are set aside (NFKC first).
SPELLINGS = {
    "Won": ("won", " WON ", "Won!", "\uff37\uff4f\uff4e"),
    "Lost": ("lost", "LOST", "Lo-st"),
    "Engaging": ("engaging ",),
    "Prospecting": ("PROSPECTING",),
}
DAY0 = date(2016, 10, 20)
SERIES = ("GTX", "MG", "GTK", "HYP", None)

STATS: Counter = Counter()


# --- the model ------------------------------------------------------------------------------


def some_date(rng: random.Random) -> date:
    return DAY0 + timedelta(days=rng.randint(-150, 800))


def money(rng: random.Random, low: int = 50, high: int = 30_000) -> Decimal:
    value = Decimal(rng.randint(low, high))
    if rng.random() < 0.3:
        value += Decimal(rng.randint(1, 99)) / 100
    return value


def closed(deal: dict) -> bool:
    """Won or Lost as the warehouse and public.archive_closed_deals read a stage."""
    return ho.match_key(deal["deal_stage"]) in ("won", "lost")


@dataclass
class Version:
    series: object
    price: object
    status: str  # current, closed, deleted
    changed: tuple[datetime, datetime] | None  # the transaction's changed_at range, if any


@dataclass
class Source:
    """The committed source, and what the warehouse must make of it."""

    rows: dict[str, dict]  # table (the archive too) -> key -> {column: value}
    gone: dict[str, set]  # keys deleted and not back (a deal: in neither table)
    reached: dict[str, set]  # keys that were in the source when the main warehouse read it
    versions: dict[int, list[Version]]
    ids: Iterator[int]

    @classmethod
    def read(cls, conn: psycopg.Connection, ids: Iterator[int]) -> Source:
        model = cls(
            read_rows(conn),
            gone={t: set() for t in TABLES},
            reached={t: set() for t in TABLES},
            versions={},
            ids=ids,
        )
        for pid, p in model.rows["products"].items():
            model.versions[pid] = [Version(p["series"], p["sales_price"], "current", None)]
        model.mark_reached()
        return model

    def live(self, table: str) -> set:
        """The keys of table that the warehouse must hold live: for deals, archived ones too."""
        keys = set(self.rows[table])
        return keys | set(self.rows[ARCHIVE]) if table == DEALS else keys

    def mark_reached(self) -> None:
        for table in TABLES:
            self.reached[table] |= self.live(table)

    def apply(self, writes: dict[tuple[str, object], dict | None]) -> None:
        """Committed writes (None: deleted); a key gone when the source holds it no more (a
        deal: in neither sales_pipeline nor the archive)."""
        for (table, key), row in writes.items():
            if row is None:
                self.rows[table].pop(key, None)
            else:
                self.rows[table][key] = row
        for table, key in writes:
            table = DEALS if table == ARCHIVE else table
            (self.gone[table].discard if key in self.live(table) else self.gone[table].add)(key)

    def product_states(self) -> dict[int, tuple]:
        live = {k: (True, p["series"], p["sales_price"]) for k, p in self.rows["products"].items()}
        return {**{k: (False, None, None) for k in self.versions}, **live}

    def close_transaction(self, before: dict[int, tuple], times: dict[int, tuple]) -> None:
        """A committed transaction: a new version per product whose series or price it
        changed (net) or that it brought (back) to life; a delete closes the version."""
        for pid, (live, series, price) in self.product_states().items():
            was_live, was_series, was_price = before.get(pid, (False, None, None))
            history = self.versions.setdefault(pid, [])
            if live and (not was_live or (series, price) != (was_series, was_price)):
                if history and history[-1].status == "current":
                    history[-1].status = "closed"
                history.append(Version(series, price, "current", times.get(pid)))
            elif was_live and not live:
                history[-1].status = "deleted"


def read_rows(conn: psycopg.Connection) -> dict[str, dict]:
    out = {}
    for table, key in STORED.items():
        cols = COLUMNS[table]
        out[table] = {
            r[0]: dict(zip(cols, r[1:], strict=True))
            for r in conn.execute(f"SELECT {key}, {', '.join(cols)} FROM public.{table}")
        }
    return out


class Refused(Exception):
    """The source refused a statement the model holds legal."""


@dataclass
class Tx:
    """A source transaction: its connection, and its own writes over the committed rows
    (None: deleted). `claims` are the rows it wrote or locked or whose key it relies on (a
    foreign-key parent it references, a row it checked has no dependents): other open
    transactions keep off them."""

    label: str
    conn: psycopg.Connection
    source: Source
    role: str
    writes: dict[tuple[str, object], dict | None] = field(default_factory=dict)
    claims: set[tuple[str, object]] = field(default_factory=set)
    locks: set[object] = field(default_factory=set)  # deals locked (SELECT ... FOR), not written
    statements: int = 0

    def row(self, table: str, key: object) -> dict | None:
        if (table, key) in self.writes:
            return self.writes[(table, key)]
        return self.source.rows[table].get(key)

    def keys(self, table: str) -> list:
        live = set(self.source.rows[table])
        for (t, k), r in self.writes.items():
            if t == table:
                (live.add if r is not None else live.discard)(k)
        return sorted(live, key=str)

    def children(self, table: str, key: object) -> list[tuple[str, object]]:
        out = []
        for (child, column), parent in FKS.items():
            if parent == table:
                out += [
                    (child, k)
                    for k in self.keys(child)
                    if self.row(child, k)[column] == key and (child, k) != (table, key)
                ]
        return out

    def put(self, table: str, key: object, row: dict | None) -> None:
        self.writes[(table, key)] = None if row is None else dict(row)
        self.claims.add((table, key))
        if row is not None:
            for (child, column), parent in FKS.items():
                if child == table and row[column] is not None:
                    self.claims.add((parent, row[column]))


# --- the test's state machine ----------------------------------------------------------------


@dataclass
class Rig:
    pair: dbtools.Warehouse
    oracle: str  # initial loads only: the oracle
    lagging: str  # a second incremental warehouse that runs rarely
    # The deal history's replay: the changes seen so far and the latest initial load's deals.
    changes: ho.ChangeRecorder = field(default_factory=ho.ChangeRecorder)
    initial_deals: dict = field(default_factory=dict)


class CrmAndCallers(RuleBasedStateMachine):
    rig: Rig  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.oltp, self.olap = self.rig.pair.oltp_dsn, self.rig.pair.olap_dsn
        self.conns: list[psycopg.Connection] = []
        self.open: dict[int, Tx] = {}
        self.source: Source | None = None
        self.main_runs = 0
        self.main_runs_at_lag = 0
        self.dirty = False  # a transaction committed since the last run of the main warehouse
        self.tx_numbers = itertools.count(1)

    # --- set-up and tear-down ---

    @initialize()
    def fresh_source(self) -> None:
        STATS["examples"] += 1
        generate.generate(self.oltp, SCALE)
        for dsn in (self.rig.lagging, self.olap):
            wc.run_initial(dsn)
        # The deal history's replay: the seed's deals, and every change as it is seen (the
        # source purges what the warehouses applied: change_retention 0).
        self.rig.changes.clear()
        self.rig.initial_deals = ho.source_deals(self.oltp)
        # The lagging warehouse becomes a consumer of the log with its first window.
        wc.run_incremental(self.rig.lagging)
        self.conns = [psycopg.connect(self.oltp, autocommit=True) for _ in range(SLOTS + 1)]
        for conn in self.conns:
            conn.execute("SET lock_timeout = '5s'")
        self.source = Source.read(self.conns[0], itertools.count(100_000 * STATS["examples"]))
        note(f"example {STATS['examples']}: fresh source at scale {SCALE}, initial loads")

    def teardown(self) -> None:
        for tx in self.open.values():
            tx.conn.execute("ROLLBACK")
        self.open.clear()
        for conn in self.conns:
            conn.close()

    # --- transactions ---

    def begin(self, slot: int, role: str) -> Tx:
        conn = self.conns[slot]
        conn.execute("BEGIN")
        if role != "superuser":
            conn.execute(f"SET LOCAL ROLE {role}")
        label = f"tx{next(self.tx_numbers)}@conn{slot}" + (
            "" if role == "superuser" else f"/{role}"
        )
        return Tx(label, conn, self.source, role)

    def others_claim(self, tx: Tx) -> set:
        return set().union(*(t.claims for t in self.open.values() if t is not tx))

    def commit(self, tx: Tx) -> None:
        before = self.source.product_states()
        if tx.role != "superuser":
            tx.conn.execute("RESET ROLE")
        times = {
            int(k): (lo, hi)
            for k, lo, hi in tx.conn.execute(
                "SELECT row_key, min(changed_at), max(changed_at) FROM cdc.change_log"
                " WHERE txid = pg_current_xact_id() AND table_name = 'products' GROUP BY 1"
            )
        }
        tx.conn.execute("COMMIT")
        note(f"[{tx.label}] COMMIT")
        self.dirty = True
        STATS["transactions committed"] += 1
        self.source.apply(tx.writes)
        self.source.close_transaction(before, times)
        self.check_source(f"{tx.label} committed")

    def check_source(
        self, after: str, blame: str = "bug in this test: its model of the source differs"
    ) -> None:
        """The source is what the model holds (a deal in one table at most)."""
        actual = read_rows(self.conns[0])
        assert actual == self.source.rows, f"{blame} from the source after {after}: " + "; ".join(
            "; ".join(
                wc.dict_differences(t, actual[t], self.source.rows[t], labels=("source", "model"))
            )
            for t in STORED
            if actual[t] != self.source.rows[t]
        )
        both = sorted(set(actual[DEALS]) & set(actual[ARCHIVE]))
        assert not both, f"bug in this test: deals both live and archived after {after}: {both}"

    def rollback(self, tx: Tx) -> None:
        tx.conn.execute("ROLLBACK")
        note(f"[{tx.label}] ROLLBACK")
        STATS["transactions rolled back"] += 1

    def tx_for(self, where: int, role: str | None = None) -> tuple[Tx, bool]:
        """The open transaction of slot `where`, or a new one-shot transaction on the
        connection of slot 0 (committed at the end of the rule; as `role`, else the superuser
        or b2b_app by slot): (tx, one_shot)."""
        if where in self.open:
            return self.open[where], False
        return self.begin(0, role or ("b2b_app" if where % 2 else "superuser")), True

    def in_tx(self, where: int, work: Callable[[Tx], None], role: str | None = None) -> None:
        tx, one_shot = self.tx_for(where, role)
        work(tx)
        if one_shot:
            if tx.statements:
                self.commit(tx)
            else:
                tx.conn.execute("ROLLBACK")

    def execute(
        self,
        tx: Tx,
        shape: str,
        statement: str,
        params: tuple | list,
        effect: Callable[[], None],
        legal: bool = True,
    ) -> bool:
        """Run one statement in tx inside a savepoint. A legal one must succeed and has its
        effect on the model; one the source refuses is rolled back to the savepoint and
        counted apart. `legal=None`: either outcome is right."""
        note(f"[{tx.label}] {statement} {list(params)}")
        tx.conn.execute("SAVEPOINT s")
        try:
            tx.conn.execute(statement, params)
        except psycopg.Error as exc:
            tx.conn.execute("ROLLBACK TO SAVEPOINT s")
            note(f"    refused: {exc.sqlstate} {exc.diag.message_primary}")
            STATS[f"refused: {shape} ({exc.sqlstate})"] += 1
            if legal:
                raise Refused(
                    f"bug in this test: the source refused a statement its model holds"
                    f" legal ({shape}): {exc.sqlstate} {exc}"
                ) from exc
            return False
        tx.conn.execute("RELEASE SAVEPOINT s")
        assert legal is not False, f"bug in this test: the source accepted {shape}"
        STATS[f"statement: {shape}"] += 1
        tx.statements += 1
        effect()
        return True

    # --- choosing rows and values ---

    def free(self, tx: Tx, table: str) -> list:
        """Live keys of table that tx may write or reference."""
        taken = self.others_claim(tx)
        return [k for k in tx.keys(table) if (table, k) not in taken]

    def deletable(self, tx: Tx, table: str) -> list:
        """Free keys without dependents, archived deals included (they would refuse the
        delete)."""
        taken = self.others_claim(tx)
        return [
            k
            for k in self.free(tx, table)
            if not any(c in taken for c in tx.children(table, k)) and not tx.children(table, k)
        ]

    def refs_free(self, tx: Tx, table: str, rows: list[dict]) -> bool:
        """Whether no other open transaction claims a parent these rows reference: writing
        them again (an INSERT of old values) checks their foreign keys, which waits for a
        transaction that renamed or deleted the parent."""
        taken = self.others_claim(tx)
        return not any(
            (parent, row[column]) in taken
            for row in rows
            for (child, column), parent in FKS.items()
            if child == table and row[column] is not None
        )

    def new_key(self, table: str) -> object:
        n = next(self.source.ids)
        return f"MB{n}" if table == "sales_pipeline" else n

    def values(self, tx: Tx, table: str, rng: random.Random, key: object) -> dict | None:
        """A new row for table (without its key): fresh unique names, parents that tx may
        reference; None when a deal has no agent or product to reference."""
        n = next(self.source.ids)
        if table == "accounts":
            parents = [k for k in self.free(tx, "accounts") if k != key]
            return {
                "account_name": f"MB Account {n}",
                "sector": rng.choice(("retail", "software", "medical", None)),
                "year_established": rng.choice((1979, 2001, None)),
                "revenue": money(rng, 1, 9_000),
                "employees": rng.choice((12, 4_001, None)),
                "office_location": rng.choice(("Germany", "Kenya", None)),
                "parent_account_id": rng.choice([*parents, None, None]) if parents else None,
            }
        if table == "products":
            return {
                "product_name": f"MB Product {n}",
                "series": rng.choice(SERIES),
                "sales_price": money(rng, 20, 30_000),
            }
        if table == "sales_agents":
            return {
                "sales_agent_name": f"MB Agent {n}",
                "manager_name": rng.choice(("Celia Rouche", "MB Manager", None)),
                "regional_office": rng.choice(("Central", "East", "West")),
            }
        agents, products = self.free(tx, "sales_agents"), self.free(tx, "products")
        if not agents or not products:
            return None
        stage = rng.choice(STAGES)
        engage = None if stage == "Prospecting" else some_date(rng)
        ended = stage in ("Won", "Lost")
        return {
            "sales_agent_id": rng.choice(agents),
            "product_id": rng.choice(products),
            "account_id": rng.choice([*self.free(tx, "accounts"), None]),
            "deal_stage": rng.choice(SPELLINGS[stage]) if rng.random() < 0.15 else stage,
            "engage_date": engage,
            "close_date": (engage or DAY0) + timedelta(days=rng.randint(0, 90)) if ended else None,
            "close_value": (money(rng) if stage == "Won" else Decimal(0)) if ended else None,
        }

    def changed(self, tx: Tx, table: str, key: object, rng: random.Random) -> dict:
        """The row of key with some of its columns changed (the key and, for products, the
        name sometimes kept). An archived deal's new values are a deal's."""
        fresh = self.values(tx, DEALS if table == ARCHIVE else table, rng, key) or {}
        old = tx.row(table, key)
        columns = [c for c in COLUMNS[table] if c in fresh]
        if not columns:
            return dict(old)
        chosen = rng.sample(columns, rng.randint(1, len(columns)))
        return {c: (fresh[c] if c in chosen else old[c]) for c in COLUMNS[table]}

    @staticmethod
    def pick(keys: list, n: int, k: int = 1) -> list:
        if not keys:
            return []
        start = n % len(keys)
        return [keys[(start + i) % len(keys)] for i in range(min(k, len(keys)))]

    # --- statement builders ---

    @staticmethod
    def cast_row(table: str, with_key: bool = True, prefix: str = "") -> str:
        cols = (KEYS[table], *COLUMNS[table]) if with_key else COLUMNS[table]
        return "(" + prefix + ", ".join(f"%s::{TYPES[table][c]}" for c in cols) + ")"

    @staticmethod
    def row_params(table: str, key: object, row: dict) -> list:
        return [key, *(row[c] for c in COLUMNS[table])]

    @staticmethod
    def column_list(table: str) -> str:
        return ", ".join((KEYS[table], *COLUMNS[table]))

    # --- rules: transactions ---

    @precondition(lambda self: "begin_transaction" not in OFF)
    @rule(slot=st.integers(1, SLOTS), role=st.sampled_from(["superuser", "b2b_app"]))
    def begin_transaction(self, slot: int, role: str) -> None:
        if slot not in self.open:
            self.open[slot] = self.begin(slot, role)
            note(f"[{self.open[slot].label}] BEGIN")

    @precondition(lambda self: self.open and "end_transaction" not in OFF)
    @rule(slot=st.integers(1, SLOTS), roll_back=st.sampled_from([False, False, False, True]))
    def end_transaction(self, slot: int, roll_back: bool) -> None:
        slots = sorted(self.open)
        tx = self.open.pop(slots[slot % len(slots)])
        if roll_back:
            self.rollback(tx)
        else:
            self.commit(tx)

    # --- rules: plain and multi-row statements ---

    @precondition(lambda self: "insert_rows" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        n=st.integers(1, 3),
        seed=st.integers(0, 2**16),
        where=st.integers(0, SLOTS),
    )
    def insert_rows(self, table: str, n: int, seed: int, where: int) -> None:
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            rows = []
            for _ in range(n):
                key = self.new_key(table)
                values = self.values(tx, table, rng, key)
                if values is None:
                    return
                rows.append((key, values))
            statement = (
                f"INSERT INTO public.{table} ({self.column_list(table)}) VALUES "
                + ", ".join(self.cast_row(table) for _ in rows)
            )
            params = [p for key, row in rows for p in self.row_params(table, key, row)]
            shape = "INSERT one row" if n == 1 else "INSERT several rows"
            self.execute(
                tx, shape, statement, params, lambda: [tx.put(table, k, r) for k, r in rows]
            )

        self.in_tx(where, work)

    @precondition(lambda self: "update_rows" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        n=st.integers(1, 3),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        where=st.integers(0, SLOTS),
    )
    def update_rows(self, table: str, n: int, pick: int, seed: int, where: int) -> None:
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            keys = self.pick(self.free(tx, table), pick, n)
            if not keys:
                return
            rows = {k: self.changed(tx, table, k, rng) for k in keys}
            if table == "accounts":  # no account its own parent
                for k, r in rows.items():
                    if r["parent_account_id"] == k:
                        r["parent_account_id"] = None
            cols = COLUMNS[table]
            statement = (
                f"UPDATE public.{table} AS t SET "
                + ", ".join(f"{c} = v.{c}" for c in cols)
                + " FROM (VALUES "
                + ", ".join(self.cast_row(table) for _ in keys)
                + f") AS v ({self.column_list(table)}) WHERE t.{KEYS[table]} = v.{KEYS[table]}"
            )
            params = [p for k in keys for p in self.row_params(table, k, rows[k])]
            shape = "UPDATE one row" if len(keys) == 1 else "UPDATE several rows"
            self.execute(
                tx, shape, statement, params, lambda: [tx.put(table, k, rows[k]) for k in keys]
            )

        self.in_tx(where, work)

    @precondition(lambda self: "touch_product" not in OFF)
    @rule(
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        how=st.sampled_from(["same values", "changed and back", "twice", "rename"]),
        where=st.integers(0, SLOTS),
    )
    def touch_product(self, pick: int, seed: int, how: str, where: int) -> None:
        """SCD2 edge cases: an update to the values a product has (no version), a change put
        back in the same transaction (no version), two changes in one transaction (one
        version), a rename (no version)."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            keys = self.pick(self.free(tx, "products"), pick)
            if not keys:
                return
            key, old = keys[0], dict(tx.row("products", keys[0]))
            steps = {
                "same values": [old],
                "changed and back": [self.changed(tx, "products", key, rng), old],
                "twice": [self.changed(tx, "products", key, rng) for _ in range(2)],
                "rename": [{**old, "product_name": f"MB Product {next(self.source.ids)}"}],
            }[how]
            for row in steps:
                self.execute(
                    tx,
                    f"UPDATE product ({how})",
                    "UPDATE public.products SET product_name = %s, series = %s,"
                    " sales_price = %s WHERE product_id = %s",
                    (row["product_name"], row["series"], row["sales_price"], key),
                    lambda row=row: tx.put("products", key, row),
                )

        self.in_tx(where, work)

    @precondition(lambda self: "delete_rows" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        n=st.integers(1, 3),
        pick=st.integers(0, 10_000),
        where=st.integers(0, SLOTS),
    )
    def delete_rows(self, table: str, n: int, pick: int, where: int) -> None:
        def work(tx: Tx) -> None:
            keys = self.pick(self.deletable(tx, table), pick, n)
            if not keys:
                return
            shape = "DELETE one row" if len(keys) == 1 else "DELETE several rows"
            self.execute(
                tx,
                shape,
                f"DELETE FROM public.{table} WHERE {KEYS[table]} = ANY (%s)",
                (keys,),
                lambda: [tx.put(table, k, None) for k in keys],
            )

        self.in_tx(where, work)

    @precondition(lambda self: "delete_a_referenced_row" not in OFF)
    @rule(
        table=st.sampled_from(PARENT_TABLES),
        pick=st.integers(0, 10_000),
        where=st.integers(0, SLOTS),
    )
    def delete_a_referenced_row(self, table: str, pick: int, where: int) -> None:
        """The source refuses it (foreign key): rolled back to a savepoint, counted."""

        def work(tx: Tx) -> None:
            taken = self.others_claim(tx)
            keys = [
                k
                for k in self.free(tx, table)
                if tx.children(table, k) and not any(c in taken for c in tx.children(table, k))
            ]
            for key in self.pick(keys, pick):
                self.execute(
                    tx,
                    "DELETE of a referenced row",
                    f"DELETE FROM public.{table} WHERE {KEYS[table]} = %s",
                    (key,),
                    lambda: None,
                    legal=False,
                )

        self.in_tx(where, work)

    # --- rules: delete and re-insert ---

    @precondition(lambda self: "delete_then_insert_same_key" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        keep=st.booleans(),
        where=st.integers(0, SLOTS),
    )
    def delete_then_insert_same_key(
        self, table: str, pick: int, seed: int, keep: bool, where: int
    ) -> None:
        """Two statements of one transaction: DELETE of a key, INSERT of the same key (with
        the values it had, or new ones)."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            keys = self.pick(self.deletable(tx, table), pick)
            if not keys:
                return
            key = keys[0]
            row = dict(tx.row(table, key)) if keep else self.values(tx, table, rng, key)
            if row is None or not self.refs_free(tx, table, [row]):
                return
            self.execute(
                tx,
                "DELETE then INSERT of one key (two statements)",
                f"DELETE FROM public.{table} WHERE {KEYS[table]} = %s",
                (key,),
                lambda: tx.put(table, key, None),
            )
            self.execute(
                tx,
                "DELETE then INSERT of one key (two statements)",
                f"INSERT INTO public.{table} ({self.column_list(table)}) VALUES "
                + self.cast_row(table),
                self.row_params(table, key, row),
                lambda: tx.put(table, key, row),
            )

        self.in_tx(where, work)

    @precondition(lambda self: "reinsert_a_deleted_key" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        where=st.integers(0, SLOTS),
    )
    def reinsert_a_deleted_key(self, table: str, pick: int, seed: int, where: int) -> None:
        """A key deleted by an earlier transaction comes back."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            taken = self.others_claim(tx)
            gone = sorted(
                (
                    k
                    for k in self.source.gone[table]
                    if (table, k) not in taken
                    and tx.row(table, k) is None
                    # a deal this transaction archived is not back in sales_pipeline
                    and (table != DEALS or ((ARCHIVE, k) not in taken and not tx.row(ARCHIVE, k)))
                ),
                key=str,
            )
            keys = self.pick(gone, pick)
            row = self.values(tx, table, rng, keys[0]) if keys else None
            if row is None:
                return
            self.execute(
                tx,
                "INSERT of a key deleted earlier",
                f"INSERT INTO public.{table} ({self.column_list(table)}) VALUES "
                + self.cast_row(table),
                self.row_params(table, keys[0], row),
                lambda: tx.put(table, keys[0], row),
            )

        self.in_tx(where, work)

    # --- rules: writable CTEs ---

    @precondition(lambda self: "cte_delete_feeds_insert_of_same_key" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        keep=st.booleans(),
        limit=st.booleans(),
        where=st.integers(0, SLOTS),
    )
    def cte_delete_feeds_insert_of_same_key(
        self, table: str, pick: int, seed: int, keep: bool, limit: bool, where: int
    ) -> None:
        """WITH d AS (DELETE ... RETURNING *) INSERT ... SELECT FROM d: one statement that
        deletes a key and inserts it again (as it was, or with new values), a referenced key
        too (its children see it back by the end of the statement). With LIMIT 1 the INSERT
        stops reading d after its row, so the DELETE ends (and its statement trigger fires)
        after the INSERT's: the log has I then D for a key that is live."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            taken = self.others_claim(tx)
            keys = [
                x
                for x in self.free(tx, table)
                if not any(c in taken for c in tx.children(table, x))
            ]
            keys = self.pick(keys, pick)
            if not keys:
                return
            key = keys[0]
            referenced = bool(tx.children(table, key))
            old = dict(tx.row(table, key))
            row = old if keep else self.values(tx, table, rng, key)
            if row is not None and table == "accounts" and row["parent_account_id"] == key:
                row["parent_account_id"] = None
            if row is None or not self.refs_free(tx, table, [row]):
                return
            k = KEYS[table]
            if keep:
                select, params = "SELECT * FROM d", [key]
            else:
                select = (
                    f"SELECT d.{k}, "
                    + ", ".join(f"%s::{TYPES[table][c]}" for c in COLUMNS[table])
                    + " FROM d"
                )
                params = [key, *(row[c] for c in COLUMNS[table])]
            statement = (
                f"WITH d AS (DELETE FROM public.{table} WHERE {k} = %s RETURNING *)"
                f" INSERT INTO public.{table} ({self.column_list(table)}) {select}"
                + (" LIMIT 1" if limit else "")
            )
            self.execute(
                tx,
                "WITH DELETE RETURNING feeding INSERT of the same key"
                + (" LIMIT 1 (log: I then D)" if limit else "")
                + (" (a referenced key)" if referenced else ""),
                statement,
                params,
                lambda: tx.put(table, key, row),
                legal=None if referenced else True,
            )

        self.in_tx(where, work)

    @precondition(lambda self: "cte_insert_feeds_change" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        then=st.sampled_from(["update others", "delete another", "delete itself"]),
        where=st.integers(0, SLOTS),
    )
    def cte_insert_feeds_change(
        self, table: str, pick: int, seed: int, then: str, where: int
    ) -> None:
        """WITH i AS (INSERT ... RETURNING) and, in the main statement, an UPDATE of other
        rows, a DELETE of another row, or a DELETE of the inserted key (which it cannot see:
        it deletes nothing)."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            key = self.new_key(table)
            row = self.values(tx, table, rng, key)
            if row is None:
                return
            k = KEYS[table]
            insert = (
                f"WITH i AS (INSERT INTO public.{table} ({self.column_list(table)}) VALUES "
                + self.cast_row(table)
                + f" RETURNING {k}) "
            )
            params = self.row_params(table, key, row)
            effects: list[tuple[object, dict | None]] = [(key, row)]
            if then == "update others":
                targets = self.pick(self.free(tx, table), pick, 2)
                if not targets:
                    return
                rows = {t: self.changed(tx, table, t, rng) for t in targets}
                if table == "accounts":
                    for t, r in rows.items():
                        if r["parent_account_id"] in (t, key):
                            r["parent_account_id"] = None
                cols = COLUMNS[table]
                main = (
                    f"UPDATE public.{table} AS t SET "
                    + ", ".join(f"{c} = v.{c}" for c in cols)
                    + " FROM (VALUES "
                    + ", ".join(self.cast_row(table) for _ in targets)
                    + f") AS v ({self.column_list(table)})"
                    + f" WHERE t.{k} = v.{k} AND EXISTS (SELECT FROM i)"
                )
                params += [p for t in targets for p in self.row_params(table, t, rows[t])]
                effects += list(rows.items())
            elif then == "delete another":
                targets = self.pick(self.deletable(tx, table), pick)
                if not targets:
                    return
                if table == "accounts" and row["parent_account_id"] == targets[0]:
                    row["parent_account_id"] = None
                    params = self.row_params(table, key, row)
                main = f"DELETE FROM public.{table} WHERE {k} = %s AND EXISTS (SELECT FROM i)"
                params.append(targets[0])
                effects.append((targets[0], None))
            else:
                main = f"DELETE FROM public.{table} WHERE {k} = (SELECT {k} FROM i)"
            self.execute(
                tx,
                f"WITH INSERT RETURNING, then {then}",
                insert + main,
                params,
                lambda: [tx.put(table, t, r) for t, r in effects],
            )

        self.in_tx(where, work)

    @precondition(lambda self: "cte_update_with_delete" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        where=st.integers(0, SLOTS),
    )
    def cte_update_with_delete(self, table: str, pick: int, seed: int, where: int) -> None:
        """WITH u AS (UPDATE one row RETURNING) DELETE another row."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            doomed = self.pick(self.deletable(tx, table), pick)
            if not doomed:
                return
            others = [x for x in self.free(tx, table) if x != doomed[0]]
            target = self.pick(others, pick // 7)
            if not target:
                return
            row = self.changed(tx, table, target[0], rng)
            if table == "accounts" and row["parent_account_id"] in (target[0], doomed[0]):
                row["parent_account_id"] = None
            k = KEYS[table]
            statement = (
                f"WITH u AS (UPDATE public.{table} SET "
                + ", ".join(f"{c} = %s::{TYPES[table][c]}" for c in COLUMNS[table])
                + f" WHERE {k} = %s RETURNING {k})"
                f" DELETE FROM public.{table} WHERE {k} = %s AND EXISTS (SELECT FROM u)"
            )
            params = [*(row[c] for c in COLUMNS[table]), target[0], doomed[0]]
            self.execute(
                tx,
                "WITH UPDATE RETURNING, DELETE of another row",
                statement,
                params,
                lambda: (tx.put(table, target[0], row), tx.put(table, doomed[0], None)),
            )

        self.in_tx(where, work)

    # --- rules: MERGE ---

    @precondition(lambda self: "merge" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        actions=st.lists(st.sampled_from(["update", "delete", "insert"]), min_size=1, max_size=4),
        where=st.integers(0, SLOTS),
    )
    def merge(self, table: str, pick: int, seed: int, actions: list, where: int) -> None:
        """MERGE with matched update, matched delete and not-matched insert."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            used: set = set()
            rows: list[tuple[str, object, dict]] = []
            for i, action in enumerate(actions):
                if action == "insert":
                    key = self.new_key(table)
                    row = self.values(tx, table, rng, key)
                elif action == "update":
                    keys = [x for x in self.free(tx, table) if x not in used]
                    key = (self.pick(keys, pick + i) or [None])[0]
                    row = self.changed(tx, table, key, rng) if key is not None else None
                    if (
                        row is not None
                        and table == "accounts"
                        and row["parent_account_id"] in used | {key}
                    ):
                        row["parent_account_id"] = None
                else:
                    keys = [x for x in self.deletable(tx, table) if x not in used]
                    # not the parent of a row this MERGE writes
                    keys = [
                        x
                        for x in keys
                        if all(r.get("parent_account_id") != x for _, _, r in rows if r is not None)
                    ]
                    key = (self.pick(keys, pick + i) or [None])[0]
                    row = dict.fromkeys(COLUMNS[table]) if key is not None else None
                if key is None or row is None:
                    continue
                if table == "accounts" and action != "delete":
                    deleted = {x for a, x, _ in rows if a == "delete"}
                    if row["parent_account_id"] in deleted:
                        row["parent_account_id"] = None
                used.add(key)
                rows.append((action, key, row))
            if not rows:
                return
            k, cols = KEYS[table], COLUMNS[table]
            statement = (
                f"MERGE INTO public.{table} AS t USING (VALUES "
                + ", ".join(self.cast_row(table, prefix="%s::text, ") for _ in rows)
                + f") AS v (action, {self.column_list(table)}) ON t.{k} = v.{k}"
                " WHEN MATCHED AND v.action = 'delete' THEN DELETE"
                " WHEN MATCHED THEN UPDATE SET "
                + ", ".join(f"{c} = v.{c}" for c in cols)
                + f" WHEN NOT MATCHED THEN INSERT ({self.column_list(table)}) VALUES ("
                + ", ".join(f"v.{c}" for c in (k, *cols))
                + ")"
            )
            params = [p for a, key, r in rows for p in [a, *self.row_params(table, key, r)]]
            self.execute(
                tx,
                "MERGE " + "/".join(sorted({a for a, _, _ in rows})),
                statement,
                params,
                lambda: [tx.put(table, key, None if a == "delete" else r) for a, key, r in rows],
            )

        self.in_tx(where, work)

    # --- rules: primary-key updates ---

    @precondition(lambda self: "update_keys" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        n=st.integers(1, 2),
        pick=st.integers(0, 10_000),
        where=st.integers(0, SLOTS),
    )
    def update_keys(self, table: str, n: int, pick: int, where: int) -> None:
        """UPDATE ... SET <key> = a new key (one row or several): the old key is gone."""

        def work(tx: Tx) -> None:
            keys = self.pick(self.deletable(tx, table), pick, n)
            if not keys:
                return
            new = {old: self.new_key(table) for old in keys}
            k, t = KEYS[table], TYPES[table][KEYS[table]]
            statement = (
                f"UPDATE public.{table} AS t SET {k} = v.new FROM (VALUES "
                + ", ".join(f"(%s::{t}, %s::{t})" for _ in keys)
                + f") AS v (old, new) WHERE t.{k} = v.old"
            )
            rows = {old: dict(tx.row(table, old)) for old in keys}
            if not self.refs_free(tx, table, list(rows.values())):
                return

            def effect() -> None:
                for old in keys:
                    tx.put(table, old, None)
                    tx.put(table, new[old], rows[old])

            self.execute(
                tx,
                "UPDATE of the key" + ("" if n == 1 else " (several rows)"),
                statement,
                [p for old in keys for p in (old, new[old])],
                effect,
            )

        self.in_tx(where, work)

    @precondition(lambda self: "swap_keys" not in OFF)
    @rule(
        table=st.sampled_from(TABLES),
        pick=st.integers(0, 10_000),
        one_statement=st.booleans(),
        where=st.integers(0, SLOTS),
    )
    def swap_keys(self, table: str, pick: int, one_statement: bool, where: int) -> None:
        """Two rows exchange their keys: in one UPDATE (the source refuses it: the primary
        key is checked row by row), or in three through a spare key."""

        def work(tx: Tx) -> None:
            keys = self.pick(self.deletable(tx, table), pick, 2)
            if len(keys) < 2:
                return
            a, b = keys
            ra, rb = dict(tx.row(table, a)), dict(tx.row(table, b))
            if not self.refs_free(tx, table, [ra, rb]):
                return
            k = KEYS[table]

            def swapped() -> None:
                tx.put(table, a, rb)
                tx.put(table, b, ra)

            if one_statement:
                self.execute(
                    tx,
                    "UPDATE swapping two keys (one statement)",
                    f"UPDATE public.{table} SET {k} = CASE {k} WHEN %s THEN %s ELSE %s END"
                    f" WHERE {k} IN (%s, %s)",
                    (a, b, a, a, b),
                    swapped,
                    legal=None,
                )
                return
            spare = self.new_key(table)
            update = f"UPDATE public.{table} SET {k} = %s WHERE {k} = %s"
            shape = "UPDATE swapping two keys (three statements)"
            self.execute(tx, shape, update, (spare, a), lambda: tx.claims.add((table, spare)))
            self.execute(tx, shape, update, (a, b), lambda: None)
            self.execute(tx, shape, update, (b, spare), swapped)

        self.in_tx(where, work)

    # --- rules: the CRM's archive of closed deals ---

    DEAL_COLUMNS = ", ".join((KEYS[DEALS], *COLUMNS[DEALS]))

    def autocommit_call(self) -> Tx:
        """A CALL on the autocommit connection of slot 0 (as the superuser, a DBA): a
        transaction of its own (or one per batch), which keeps off every open one's claims."""
        return Tx(f"call{next(self.tx_numbers)}@conn0", self.conns[0], self.source, "superuser")

    def archived_free(self, tx: Tx) -> list:
        """Archived deals (in tx's view) that no other open transaction claims, in the archive
        or in sales_pipeline."""
        taken = self.others_claim(tx)
        return [
            k for k in tx.keys(ARCHIVE) if (ARCHIVE, k) not in taken and (DEALS, k) not in taken
        ]

    def archive_statement(self, tx: Tx, keys: list) -> None:
        """Closed deals moved into the archive by one statement (the routine's), in tx."""
        rows = {k: dict(tx.row(DEALS, k)) for k in keys}
        statement = (
            f"WITH moved AS (DELETE FROM public.{DEALS} WHERE opportunity_id = ANY (%s)"
            f" RETURNING *) INSERT INTO public.{ARCHIVE} ({self.DEAL_COLUMNS})"
            f" SELECT {self.DEAL_COLUMNS} FROM moved"
        )
        dba = tx.role == "superuser"

        def effect() -> None:
            for k, row in rows.items():
                tx.put(DEALS, k, None)
                tx.put(ARCHIVE, k, row)

        self.execute(
            tx,
            "WITH DELETE RETURNING feeding INSERT INTO the archive (archiving)"
            + ("" if dba else " as b2b_app"),
            statement,
            (keys,),
            effect,
            legal=dba,
        )

    @precondition(lambda self: "archive_closed_deals" not in OFF)
    @rule(
        pick=st.integers(0, 10_000),
        after=st.sampled_from([0, 0, 1]),
        batch=st.sampled_from([1, 2, 3, 5, 10_000]),
    )
    def archive_closed_deals(self, pick: int, after: int, batch: int) -> None:
        """CALL public.archive_closed_deals(cut-off, batch) as a DBA, outside any transaction
        (it commits each batch): every committed deal closed (the stage folded: Won, Lost)
        before a cut-off drawn from the deals' close dates moves to the archive, except the
        ones an open transaction updated, deleted or locked (SKIP LOCKED); the others
        go on where they are."""
        committed = self.source.rows[DEALS]
        days = sorted({r["close_date"] for r in committed.values() if r["close_date"]})
        cut = (days[pick % len(days)] if days else DAY0) + timedelta(days=after)
        eligible = sorted(
            k
            for k, r in committed.items()
            if closed(r) and r["close_date"] is not None and r["close_date"] < cut
        )
        locked = {k for t in self.open.values() for (table, k) in t.writes if table == DEALS}
        locked |= {k for t in self.open.values() for k in t.locks}
        moved = [k for k in eligible if k not in locked]
        skipped = [k for k in eligible if k in locked]
        call = self.autocommit_call()
        # The archive's foreign keys take a key-share lock on each moved deal's parents: the
        # routine would wait for an open transaction that renamed (a unique column) or
        # deleted one. Not now, then.
        if not self.refs_free(call, DEALS, [committed[k] for k in moved]):
            note(
                "archive_closed_deals: a parent of a deal it would move is held by an open"
                " transaction (the routine would wait); not called"
            )
            return
        statement = "CALL public.archive_closed_deals(%s, %s)"
        note(
            f"[{call.label}] {statement} {[cut, batch]}  (expected: {len(moved)} moved,"
            f" locked by open transactions: {skipped})"
        )
        try:
            (archived,) = call.conn.execute(statement, (cut, batch)).fetchone()
        except psycopg.Error as exc:
            raise AssertionError(
                f"public.archive_closed_deals({cut}, {batch}) failed: {wc.Callers.describe(exc)}"
            ) from exc
        STATS["statement: CALL public.archive_closed_deals"] += 1
        STATS["deals archived by the routine"] += archived
        STATS["deals the routine skipped (locked)"] += len(skipped)
        self.dirty = self.dirty or archived > 0
        for k in moved:
            self.source.rows[ARCHIVE][k] = self.source.rows[DEALS].pop(k)
        self.check_source(
            f"CALL public.archive_closed_deals({cut}, {batch}) (it reported {archived} moved)",
            blame=f"archive_closed_deals moved other deals than {moved} (committed closed deals"
            f" before {cut}, without those locked by open transactions, {skipped}): the model"
            " differs",
        )
        assert archived == len(moved), f"archive_closed_deals reported {archived}, moved {moved}"

    @precondition(lambda self: self.open and "lock_deals" not in OFF)
    @rule(
        slot=st.integers(1, SLOTS),
        n=st.integers(1, 3),
        pick=st.integers(0, 10_000),
        mode=st.sampled_from(["UPDATE", "NO KEY UPDATE", "SHARE", "KEY SHARE"]),
    )
    def lock_deals(self, slot: int, n: int, pick: int, mode: str) -> None:
        """SELECT ... FOR UPDATE (or a weaker mode) of closed deals in an open transaction:
        rows locked, not written, which the archiving routine skips as well (its FOR UPDATE
        conflicts with every row lock)."""
        slots = sorted(self.open)
        tx = self.open[slots[slot % len(slots)]]
        keys = self.pick([k for k in self.free(tx, DEALS) if closed(tx.row(DEALS, k))], pick, n)
        if not keys:
            return

        def effect() -> None:
            tx.locks.update(keys)
            tx.claims.update((DEALS, k) for k in keys)

        self.execute(
            tx,
            f"SELECT ... FOR {mode}",
            f"SELECT opportunity_id FROM public.{DEALS} WHERE opportunity_id = ANY (%s) FOR {mode}",
            (keys,),
            effect,
        )

    @precondition(lambda self: "archive_in_transaction" not in OFF)
    @rule(n=st.integers(1, 3), pick=st.integers(0, 10_000), where=st.integers(0, SLOTS))
    def archive_in_transaction(self, n: int, pick: int, where: int) -> None:
        """The routine's move as a statement of the CRM's own archiving job, in a transaction
        that may stay open: WITH moved AS (DELETE FROM sales_pipeline ... RETURNING *) INSERT
        INTO sales_pipeline_archive SELECT ... FROM moved, on closed deals. b2b_app may not
        write the archive: refused (42501)."""

        def work(tx: Tx) -> None:
            taken = self.others_claim(tx)
            # The archive's foreign keys take a key-share lock on each deal's parents: not
            # on one another open transaction renamed or deleted (it would wait).
            keys = [
                k
                for k in self.free(tx, DEALS)
                if closed(tx.row(DEALS, k))
                and (ARCHIVE, k) not in taken
                and self.refs_free(tx, DEALS, [tx.row(DEALS, k)])
            ]
            keys = self.pick(keys, pick, n)
            if not keys:
                return
            self.archive_statement(tx, keys)

        self.in_tx(where, work, role="superuser")

    @precondition(lambda self: "restore_archived_deals" not in OFF)
    @rule(
        n=st.integers(1, 3),
        pick=st.integers(0, 10_000),
        stray=st.sampled_from([False, False, False, False, True]),
    )
    def restore_archived_deals(self, n: int, pick: int, stray: bool) -> None:
        """CALL public.restore_archived_deals(ids) as a DBA, outside any transaction: archived
        deals move back, all or nothing. Refused (P0002) when an id is not archived."""
        call = self.autocommit_call()
        committed = self.source.rows[ARCHIVE]
        keys = [k for k in self.archived_free(call) if self.refs_free(call, DEALS, [committed[k]])]
        keys = self.pick(sorted(keys), pick, n)
        if not keys:
            return
        ids = [*keys, self.new_key(DEALS)] if stray else keys
        expected = "P0002" if stray else None
        shape = "CALL public.restore_archived_deals" + (" (an id not archived)" if stray else "")
        statement = "CALL public.restore_archived_deals(%s)"
        note(f"[{call.label}] {statement} {[ids]}  (expected: {expected or 'restored'})")
        try:
            (restored,) = call.conn.execute(statement, (ids,)).fetchone()
        except psycopg.Error as exc:
            note(f"    refused: {exc.sqlstate} {exc.diag.message_primary}")
            assert exc.sqlstate == expected, (
                f"restore_archived_deals({ids}) failed with {wc.Callers.describe(exc)}, expected"
                f" {expected or 'success'}"
            )
            STATS[f"refused: {shape} ({exc.sqlstate})"] += 1
            self.check_source(
                f"a refused {statement}", blame="a refused restore changed the source:"
            )
            return
        assert expected is None, f"restore_archived_deals({ids}) succeeded, expected {expected}"
        assert restored == len(keys), f"restore_archived_deals reported {restored} of {keys}"
        STATS[f"statement: {shape}"] += 1
        self.dirty = True
        for k in keys:
            self.source.rows[DEALS][k] = self.source.rows[ARCHIVE].pop(k)
        self.check_source(
            f"{statement} {ids}",
            blame="restore_archived_deals: the model (deals moved back) differs",
        )

    @precondition(lambda self: "restore_in_transaction" not in OFF)
    @rule(
        n=st.integers(1, 2),
        pick=st.integers(0, 10_000),
        where=st.integers(0, SLOTS),
    )
    def restore_in_transaction(self, n: int, pick: int, where: int) -> None:
        """The restore as one statement in a transaction that may stay open: WITH back AS
        (DELETE FROM sales_pipeline_archive ... RETURNING *) INSERT INTO sales_pipeline
        SELECT ... FROM back. Refused (42501) as b2b_app."""

        def work(tx: Tx) -> None:
            keys = [
                k for k in self.archived_free(tx) if self.refs_free(tx, DEALS, [tx.row(ARCHIVE, k)])
            ]
            keys = self.pick(keys, pick, n)
            if not keys:
                return
            rows = {k: dict(tx.row(ARCHIVE, k)) for k in keys}
            dba = tx.role == "superuser"
            statement = (
                f"WITH back AS (DELETE FROM public.{ARCHIVE} WHERE opportunity_id = ANY (%s)"
                f" RETURNING *) INSERT INTO public.{DEALS} ({self.DEAL_COLUMNS})"
                f" SELECT {self.DEAL_COLUMNS} FROM back"
            )

            def effect() -> None:
                for k, row in rows.items():
                    tx.put(ARCHIVE, k, None)
                    tx.put(DEALS, k, row)

            self.execute(
                tx,
                "WITH DELETE RETURNING from the archive feeding INSERT (restoring)"
                + ("" if dba else " as b2b_app"),
                statement,
                (keys,),
                effect,
                legal=dba,
            )

        self.in_tx(where, work, role="superuser")

    @precondition(lambda self: "purge_archived_deals" not in OFF)
    @rule(n=st.integers(1, 2), pick=st.integers(0, 10_000), where=st.integers(0, SLOTS))
    def purge_archived_deals(self, n: int, pick: int, where: int) -> None:
        """DELETE FROM sales_pipeline_archive: the CRM purges its archive, the deals are gone
        (the warehouse marks them deleted)."""

        def work(tx: Tx) -> None:
            keys = self.pick(self.archived_free(tx), pick, n)
            if not keys:
                return
            dba = tx.role == "superuser"
            self.execute(
                tx,
                "DELETE from the archive" + ("" if dba else " as b2b_app"),
                f"DELETE FROM public.{ARCHIVE} WHERE opportunity_id = ANY (%s)",
                (keys,),
                lambda: [tx.put(ARCHIVE, k, None) for k in keys],
                legal=dba,
            )

        self.in_tx(where, work, role="superuser")

    @precondition(lambda self: "update_archived_deals" not in OFF)
    @rule(
        n=st.integers(1, 2),
        pick=st.integers(0, 10_000),
        seed=st.integers(0, 2**16),
        stamp=st.booleans(),
        where=st.integers(0, SLOTS),
    )
    def update_archived_deals(self, n: int, pick: int, seed: int, stamp: bool, where: int) -> None:
        """UPDATE of archived deals (the source allows it; the warehouse follows): some of
        their columns, and with `stamp` archived_at too."""
        rng = random.Random(seed)

        def work(tx: Tx) -> None:
            keys = self.pick(self.archived_free(tx), pick, n)
            rows = {k: self.changed(tx, ARCHIVE, k, rng) for k in keys}
            if not keys or not self.refs_free(tx, DEALS, list(rows.values())):
                return
            cols = COLUMNS[ARCHIVE]
            statement = (
                f"UPDATE public.{ARCHIVE} AS t SET "
                + ", ".join(f"{c} = v.{c}" for c in cols)
                + (", archived_at = clock_timestamp()" if stamp else "")
                + " FROM (VALUES "
                + ", ".join(self.cast_row(DEALS) for _ in keys)
                + f") AS v ({self.DEAL_COLUMNS}) WHERE t.opportunity_id = v.opportunity_id"
            )
            dba = tx.role == "superuser"
            self.execute(
                tx,
                "UPDATE of archived deals"
                + (" and archived_at" if stamp else "")
                + ("" if dba else " as b2b_app"),
                statement,
                [p for k in keys for p in self.row_params(DEALS, k, rows[k])],
                lambda: [tx.put(ARCHIVE, k, rows[k]) for k in keys],
                legal=dba,
            )

        self.in_tx(where, work, role="superuser")

    @precondition(lambda self: "delete_parent_of_archived_deals" not in OFF)
    @rule(
        table=st.sampled_from(PARENT_TABLES),
        pick=st.integers(0, 10_000),
        where=st.integers(0, SLOTS),
    )
    def delete_parent_of_archived_deals(self, table: str, pick: int, where: int) -> None:
        """The CRM tries to retire an agent, product or account whose deals it archives: in
        one transaction its closed deals are archived (the routine's statement; not as
        b2b_app), its other deals handed to another one (an account's: to another or none),
        its sub-accounts left without a parent, then its DELETE is refused (23503): the
        archive has sales_pipeline's foreign keys. (This rule found the bug they fix, when
        the archive had none and the source allowed the delete: the incremental warehouse
        kept the archived deals' facts on the deleted member, a fresh load put them on
        Unknown.)"""
        column = {"sales_agents": "sales_agent_id", "products": "product_id"}.get(
            table, "account_id"
        )

        def plan(tx: Tx, key: object) -> tuple[list, dict, list] | None:
            """(deals to archive, deals handed over with their new rows, sub-accounts), or
            None when key cannot leave that way now."""
            taken = self.others_claim(tx)
            children = tx.children(table, key)
            if any(c in taken for c in children):
                return None
            deals = [k for t, k in children if t == DEALS]
            moved = [
                k
                for k in deals
                if tx.role == "superuser"
                and closed(tx.row(DEALS, k))
                and (ARCHIVE, k) not in taken
                and self.refs_free(tx, DEALS, [tx.row(DEALS, k)])
            ]
            if not moved and not any(t == ARCHIVE for t, _ in children):
                return None
            heirs = [k for k in self.free(tx, table) if k != key]
            if table == "accounts":
                heirs.append(None)
            handed = [k for k in deals if k not in moved]
            if handed and not heirs:
                return None
            heir = self.pick(heirs, pick)[0] if heirs else None
            rows = {k: {**tx.row(DEALS, k), column: heir} for k in handed}
            if not self.refs_free(tx, DEALS, list(rows.values())):
                return None
            return moved, rows, [k for t, k in children if t == "accounts"]

        def work(tx: Tx) -> None:
            keys = self.free(tx, table)
            for key in self.pick(keys, pick, len(keys)):
                steps = plan(tx, key)
                if steps is not None:
                    break
            else:
                return
            moved, handed, subs = steps
            if moved:
                self.archive_statement(tx, moved)
            if handed:
                heir = next(iter(handed.values()))[column]
                self.execute(
                    tx,
                    "UPDATE handing deals to another parent",
                    f"UPDATE public.{DEALS} SET {column} = %s WHERE opportunity_id = ANY (%s)",
                    (heir, list(handed)),
                    lambda: [tx.put(DEALS, k, r) for k, r in handed.items()],
                )
            if subs:
                rows = {k: {**tx.row("accounts", k), "parent_account_id": None} for k in subs}
                self.execute(
                    tx,
                    "UPDATE of sub-accounts to no parent",
                    "UPDATE public.accounts SET parent_account_id = NULL"
                    " WHERE account_id = ANY (%s)",
                    (subs,),
                    lambda: [tx.put("accounts", k, r) for k, r in rows.items()],
                )
            self.execute(
                tx,
                "DELETE of a parent only archived deals name",
                f"DELETE FROM public.{table} WHERE {KEYS[table]} = %s",
                (key,),
                lambda: None,
                legal=False,
            )

        self.in_tx(where, work, role="superuser")

    # --- rules: the pipeline ---

    def check_main(self, what: str) -> None:
        self.main_runs += 1
        self.dirty = False
        self.source.mark_reached()
        check_warehouse(self.rig, self.source, what)

    @precondition(lambda self: (self.dirty or self.open) and "run_incremental" not in OFF)
    @rule()
    def run_incremental(self) -> None:
        note(f"CALL etl.run_incremental_update()  (open: {sorted(self.open)})")
        STATS["runs (one caller)"] += 1
        if self.open:
            STATS["runs while a source transaction is open"] += 1
        self.rig.changes.record(self.oltp)
        try:
            wc.run_incremental(self.olap)
        except psycopg.Error as exc:
            raise AssertionError(
                f"incremental run failed: {wc.Callers.describe(exc)};"
                f" latest run {wc.last_run(self.olap)}"
            ) from exc
        self.check_main("after an incremental run")

    @precondition(lambda self: "two_callers_at_once" not in OFF)
    @rule(initial=st.booleans())
    def two_callers_at_once(self, initial: bool) -> None:
        """Two callers at once: one runs, the other waits (then runs) or is refused with
        55P03; nothing is left running or locked."""
        statements = ["CALL etl.run_incremental_update()"] * 2
        if initial:
            statements[1] = "CALL etl.run_initial_load()"
        note(f"two callers at once: {statements}  (open: {sorted(self.open)})")
        STATS["runs (two callers at once)"] += 1
        self.rig.changes.record(self.oltp)
        callers = wc.Callers(self.olap, statements)
        try:
            outcomes = [wc.Callers.describe(o) for o in callers.outcomes]
            note(f"    outcomes: {outcomes}")
            leftovers = wc.pipeline_leftovers(self.olap)
        finally:
            callers.close()
        wrong = [
            f"{s}: {d}"
            for s, o, d in zip(statements, callers.outcomes, outcomes, strict=True)
            if o is not None and o.sqlstate != "55P03"
        ]
        assert not wrong, f"a concurrent caller failed with something else than 55P03: {wrong}"
        assert any(o is None for o in callers.outcomes), f"no caller succeeded: {outcomes}"
        assert not leftovers, f"after two callers at once ({outcomes}): {leftovers}"
        if callers.outcomes[1] is None and initial:
            self.rig.initial_deals = ho.source_deals(self.oltp)
            # An initial load rebuilds: what is gone is forgotten, one version per product.
            self.source.reached = {t: set() for t in TABLES}
            self.source.versions = {
                pid: [Version(p["series"], p["sales_price"], "current", None)]
                for pid, p in self.source.rows["products"].items()
            }
        self.check_main(f"after two callers at once ({outcomes})")

    @precondition(lambda self: "move_horizon" not in OFF)
    @rule(
        pick=st.integers(0, 10_000),
        how=st.sampled_from(["a close date", "a close date", "none", "2 years"]),
        batch=st.sampled_from([1, 3, 10_000]),
    )
    def move_horizon(self, pick: int, how: str, batch: int) -> None:
        """A DBA moves the warehouse's horizon (etl.config cold_horizon: one of the deals'
        close dates, 'none' or the default interval) and calls `CALL
        etl.run_horizon_move(batch)`: the facts of deals closed before it go to the cold
        part, the others to the hot one, in batches. Open source transactions go on, and
        changes committed since the last run stay pending (a move applies none). The live
        content is what it was before the move; every fact is where the horizon places it,
        one per opportunity (warehouse_compare.assert_consistent); the move's run succeeded
        and validated; the next incremental run is checked against a fresh load as always."""
        days = sorted(
            {r["close_date"] for t in (DEALS, ARCHIVE) for r in self.source.rows[t].values()}
            - {None}
        )
        horizon = str(days[pick % len(days)] if days else DAY0) if how == "a close date" else how
        note(f"cold_horizon {horizon!r}; CALL etl.run_horizon_move({batch})")
        STATS["horizon moves"] += 1
        wc.set_config(self.olap, "cold_horizon", horizon)
        before = wc.live_content(self.olap)
        try:
            wc.call(self.olap, "CALL etl.run_horizon_move(%s)", (batch,))
        except psycopg.Error as exc:
            raise AssertionError(
                f"horizon move failed: {wc.Callers.describe(exc)};"
                f" latest run {wc.last_run(self.olap)}"
            ) from exc
        what = f"after a horizon move to {horizon!r}"
        assert wc.last_run(self.olap)[1:3] == ("horizon_move", "succeeded"), what
        assert not wc.pipeline_leftovers(self.olap), f"{what}: {wc.pipeline_leftovers(self.olap)}"
        problems = wc.content_differences(wc.live_content(self.olap), before, ("after", "before"))
        assert not problems, f"{what}: the move changed the content:\n  " + "\n  ".join(problems)
        try:
            wc.assert_consistent(self.olap)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None

    @precondition(
        lambda self: (
            self.main_runs - self.main_runs_at_lag >= LAG and "run_lagging_warehouse" not in OFF
        )
    )
    @rule()
    def run_lagging_warehouse(self) -> None:
        """The second warehouse on this source runs only now and then; the main one purged
        what it applied meanwhile (change_retention 0). Its window must be whole, or its run
        refused (55000, hint: initial load); never silently stale."""
        self.main_runs_at_lag = self.main_runs
        lagging = self.rig.lagging
        note("CALL etl.run_incremental_update() on the lagging warehouse")
        STATS["runs (lagging warehouse)"] += 1
        try:
            wc.run_incremental(lagging)
            refused = None
        except psycopg.Error as exc:
            refused = exc
            note(f"    refused: {wc.Callers.describe(exc)}")
        if refused is not None:
            hint = refused.diag.message_hint or ""
            assert refused.sqlstate == "55000" and "run_initial_load" in hint, (
                f"the lagging warehouse's run failed, not with 55000 and a hint to reload:"
                f" {wc.Callers.describe(refused)}"
            )
            STATS["lagging runs refused (55000)"] += 1
            assert not wc.pipeline_leftovers(lagging), wc.pipeline_leftovers(lagging)
            wc.run_initial(lagging)
        assert not wc.pipeline_leftovers(lagging), wc.pipeline_leftovers(lagging)
        wc.run_initial(self.rig.oracle)
        try:
            wc.assert_same_live_content(lagging, self.rig.oracle, self.oltp)
        except AssertionError as exc:
            raise AssertionError(
                "the lagging warehouse's run "
                + ("was refused, and the initial load after it" if refused else "succeeded but")
                + f" does not show the source (silently stale): {exc}"
            ) from None
        wc.assert_consistent(lagging)


def product_history(olap_dsn: str) -> dict[int, list[tuple]]:
    """Per product_id, its versions in valid_from order: (series, sales_price, is_current,
    is_deleted, valid_from)."""
    out: dict[int, list[tuple]] = {}
    for product_id, *version in wc.fetch(
        olap_dsn,
        "SELECT product_id, series, sales_price, is_current, is_deleted,"
        " CASE WHEN isfinite(valid_from) THEN valid_from END"
        " FROM dwh.dim_product WHERE product_key <> -1 ORDER BY product_id, valid_from",
    ):
        out.setdefault(product_id, []).append(tuple(version))
    return out


def check_warehouse(rig: Rig, source: Source, what: str) -> None:
    """The invariant after a run of the main warehouse."""
    olap, oltp = rig.pair.olap_dsn, rig.pair.oltp_dsn
    leftovers = wc.pipeline_leftovers(olap)
    assert not leftovers, f"{what}: {leftovers}"
    run = wc.last_run(olap)
    assert run[2] == "succeeded", f"{what}: the latest run is {run}"
    problems = wc.latest_run_problems(olap)
    assert not problems, f"{what}: {problems}"

    wc.run_initial(rig.oracle)
    try:
        wc.assert_same_live_content(olap, rig.oracle, oltp)
        wc.assert_consistent(olap)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None

    actual = product_history(olap)
    expected = {
        pid: [(v.series, v.price, v.status) for v in h] for pid, h in source.versions.items() if h
    }
    wrong = wc.history_differences({pid: [v[:4] for v in h] for pid, h in actual.items()}, expected)
    for pid, history in source.versions.items():
        if len(actual.get(pid, [])) != len(history):
            continue
        for got, want in zip(actual[pid], history, strict=True):
            if want.changed and not (got[4] and want.changed[0] <= got[4] <= want.changed[1]):
                wrong.append(
                    f"product {pid}: version {got[:2]} valid from {got[4]}, not a changed_at of"
                    f" its transaction ({want.changed[0]} .. {want.changed[1]})"
                )
    assert not wrong, f"{what}: SCD2 history is not one version per changing transaction:\n  " + (
        "\n  ".join(wrong)
    )

    # The deal history is what a replay of the committed changes gives, and its summaries
    # what the history gives.
    problems = ho.history_differences(
        olap, ho.expected_history(oltp, olap, rig.initial_deals, rig.changes)
    )
    problems += ho.summary_differences(olap)
    assert not problems, f"{what}: deal history differs from the replay:\n  " + (
        "\n  ".join(problems)
    )

    deleted = wc.deleted_members(olap)
    for table in TABLES:
        live = source.live(table)  # an archived deal is live
        missing = wc.keys_missing(source.reached[table] - live, deleted[table])
        assert not missing, f"{what}: {table}: gone from the source, not marked deleted: {missing}"
        wrongly = sorted(deleted[table] & live, key=str)
        assert not wrongly, f"{what}: {table}: live keys marked deleted: {wrongly}"


# --- the test --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    oracle_name, oracle = wc.attach_warehouse(warehouse.oltp_dsn, "model_oracle")
    lagging_name, lagging = wc.attach_warehouse(warehouse.oltp_dsn, "model_lagging")
    # Both incremental warehouses purge what every consumer applied, at once.
    for dsn in (warehouse.olap_dsn, lagging):
        wc.set_config(dsn, "change_retention", "0 seconds")
    yield Rig(warehouse, oracle, lagging)
    dbtools.drop_database(oracle_name)
    dbtools.drop_database(lagging_name)


def test_crm_statements_and_callers_keep_the_warehouse_equal_to_a_fresh_load(
    rig: Rig, request: pytest.FixtureRequest
) -> None:
    CrmAndCallers.rig = rig
    STATS.clear()
    try:
        run_state_machine_as_test(
            CrmAndCallers,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                derandomize=not os.environ.get("MODEL_RANDOM"),
                phases=(
                    [Phase.explicit, Phase.reuse, Phase.generate]
                    + ([Phase.shrink] if os.environ.get("MODEL_SHRINK") else [])
                ),
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        statements = sorted((k, v) for k, v in STATS.items() if k.startswith("statement: "))
        refused = sorted((k, v) for k, v in STATS.items() if k.startswith("refused: "))
        other = sorted(
            (k, v) for k, v in STATS.items() if not k.startswith(("statement: ", "refused: "))
        )
        lines = [
            f"\nmodel-based: {STATS['examples']} examples,"
            f" {sum(v for _, v in statements)} statements, {sum(v for _, v in refused)} refused",
            *(f"  {k}: {v}" for k, v in other),
            *(f"  {k}: {v}" for k, v in statements),
            *(f"  {k}: {v}" for k, v in refused),
        ]
        dbtools.report(request, "\n".join(lines))
