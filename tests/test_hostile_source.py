"""Hostile source rows: whatever a CRM lets its users write (the source checks only keys), the
initial load and the incremental update finish, account for every row, and keep dim_date small.

Each example resets the source to a small clean base plus generated dirty rows and runs
`CALL etl.run_initial_load()`; then applies generated dirty changes through ordinary
transactions and runs `CALL etl.run_incremental_update()`. Dirty means: NULL wherever the
source allows it; extreme, negative, NaN and infinite numbers; dates from 4713 BC to infinity,
close before engage; long and odd Unicode (combining marks, right-to-left, emoji, zero-width,
keys near the size the source's own index allows; NUL cannot be stored in text); names
differing only in case or spacing; parent cycles; accounts, agents and products deleted once
their deals let go of them (the foreign keys see to that); keys changed in place; deal stages
outside the four known ones; many won deals at the largest accepted value in one group.

After each run, on the incremental warehouse and on a second warehouse that loads the same
source from scratch:
- the run succeeded (its validation passed);
- every source row is accounted for: accounts, agents and products are live dimension rows
  with the source's values; each deal is a live fact as the source has it (a stage that does
  not resolve once trimmed and case-folded, a date outside date_min .. date_max on the
  Unknown member, listed as a data-quality issue, as is a value above max_close_value), or
  (exactly those whose close value no column holds: NaN, infinite, beyond numeric(18, 2))
  quarantined in etl.error_log with its reason and the record as the source has it now;
- dim_date stays within date_min .. date_max and within date_margin_days of the dates the
  source held;
- the incremental warehouse shows the same live content as the fresh load.

One warehouse pair serves every example (the source is replaced between examples). Examples
are derandomized; HOSTILE_EXAMPLES=N and HOSTILE_RANDOM=1 change that when hunting.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

import dbtools
import warehouse_compare as wc
from b2bdwh import compare, reporting, source

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "25"))

# --- hostile values (numbers and dates as text: Python has no NaN date or 4713 BC) ----------

ODD_STRINGS = [
    "",
    " ",
    "\t\n",
    "e\u0301\u0301\u0301",  # combining marks
    "\u202eevil\u202c",  # right-to-left override
    "שלום עולם",
    "مرحبا",
    "👩‍👩‍👧‍👦🏳️‍🌈",
    "\u200b\u200d\ufeff",  # zero-width and BOM
    "\uff21\uff43\uff4d\uff45",  # full-width Acme
    "'; DROP TABLE accounts; --",
    '"quoted", comma',
    "back\\slash {}",
    "NULL",
    "\U0010ffff\uffff",
    "x" * 20_000,  # long, compressible
]
odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=30),
)
maybe_text = st.one_of(st.none(), odd_text)


def incompressible(n_bytes: int, seed: int) -> str:
    """About n_bytes of text that does not compress (two-byte Cyrillic letters at random)."""
    rng = random.Random(seed)
    return "".join(chr(0x400 + rng.randrange(0x100)) for _ in range(n_bytes // 2))


# Keys of any shape the source's primary key accepts; near its index limit (about 2,700
# bytes of text that does not compress) a key fits the source's index and little else.
opportunity_id = st.one_of(
    st.sampled_from(["", " ", "x", "X", "x ", "0001", "NULL", "a,b", '"{q}"']),
    odd_text.filter(lambda s: len(s.encode()) < 2000),
    st.builds(incompressible, st.integers(2600, 2700), st.integers(0, 99)),
)
numeric = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "0",
            "-0.00",
            "-1",
            "1e1000",
            "-1e1000",
            "1e-1000",
            "0.005",
            "999999999999.995",
            "1000000000000",
            "1000000000000.01",
            "-999999999999.99",
            "123456789012345678901234567890.123456789",
        ]
    ),
    st.decimals(-(10**13), 10**13, allow_nan=False, allow_infinity=False).map(str),
)
integer = st.one_of(
    st.none(), st.sampled_from([0, -1, 99999, -(2**31), 2**31 - 1]), st.integers(-5, 3000)
)
DATE_MIN, DATE_MAX = date(1990, 1, 1), date(2099, 12, 31)  # etl.config defaults, checked below
a_date = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "4713-01-01 BC",
            "infinity",
            "-infinity",
            "1989-12-31",
            "1990-01-01",
            "2099-12-31",
            "2100-01-01",
        ]
    ),
    st.dates(date(1985, 1, 1), date(2105, 1, 1)).map(date.isoformat),
    st.dates(date(2016, 1, 1), date(2018, 12, 31)).map(date.isoformat),
)
KNOWN_STAGES = wc.KNOWN_STAGES
stage = st.one_of(
    st.sampled_from(KNOWN_STAGES),
    st.sampled_from(["won", "WON", " Won", "Won ", "", "Negotiating", "Closed Won", "Unknown"]),
    odd_text,
)

account = st.fixed_dictionaries(
    {
        "account_name": odd_text,
        "sector": maybe_text,
        "year_established": integer,
        "revenue": numeric,
        "employees": integer,
        "office_location": maybe_text,
        "parent": st.one_of(st.none(), st.integers(0, 50)),  # index of an account, maybe itself
    }
)
product = st.fixed_dictionaries(
    {"product_name": odd_text, "series": maybe_text, "sales_price": numeric}
)
agent = st.fixed_dictionaries(
    {"sales_agent_name": odd_text, "manager_name": maybe_text, "regional_office": maybe_text}
)
deal = st.fixed_dictionaries(
    {
        "opportunity_id": opportunity_id,
        "agent": st.integers(0, 50),
        "product": st.integers(0, 50),
        "account": st.one_of(st.none(), st.integers(0, 50)),
        "deal_stage": stage,
        "engage_date": a_date,
        "close_date": a_date,
        "close_value": numeric,
    }
)
deal_change = st.fixed_dictionaries(
    {},
    optional={
        "deal_stage": stage,
        "engage_date": a_date,
        "close_date": a_date,
        "close_value": numeric,
        "account": st.one_of(st.none(), st.integers(0, 50)),
    },
)

# One change of the incremental phase: (kind, which row, values).
change = st.one_of(
    st.tuples(st.just("insert_deal"), st.integers(0, 99), deal),
    st.tuples(st.just("update_deal"), st.integers(0, 99), deal_change),
    st.tuples(st.just("fix_deal"), st.integers(0, 99), st.none()),
    st.tuples(st.just("spoil_deal"), st.integers(0, 99), deal_change),
    st.tuples(st.just("delete_deal"), st.integers(0, 99), st.none()),
    st.tuples(st.just("rekey_deal"), st.integers(0, 99), opportunity_id),
    st.tuples(st.just("insert_account"), st.integers(0, 99), account),
    st.tuples(st.just("update_account"), st.integers(0, 99), account),
    st.tuples(st.just("delete_account"), st.integers(0, 99), st.none()),
    st.tuples(st.just("account_cycle"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("rekey_account"), st.integers(0, 99), st.integers(10**6, 2**31 - 1)),
    st.tuples(st.just("rename_case"), st.integers(0, 99), st.sampled_from(["A", "P", "G"])),
    st.tuples(st.just("insert_product"), st.integers(0, 99), product),
    st.tuples(st.just("update_product"), st.integers(0, 99), product),
    st.tuples(st.just("delete_product"), st.integers(0, 99), st.none()),
    st.tuples(st.just("insert_agent"), st.integers(0, 99), agent),
    st.tuples(st.just("update_agent"), st.integers(0, 99), agent),
    st.tuples(st.just("delete_agent"), st.integers(0, 99), st.none()),
    # many_huge_won (10,001 rows) only in its explicit example, to keep the module quick
)
transactions = st.lists(st.lists(change, min_size=1, max_size=4), min_size=1, max_size=4)
dirty_source = st.fixed_dictionaries(
    {
        "accounts": st.lists(account, max_size=4),
        "products": st.lists(product, max_size=3),
        "agents": st.lists(agent, max_size=3),
        "deals": st.lists(deal, max_size=8),
    }
)


# --- writing the source ----------------------------------------------------------------------

BASE = """
INSERT INTO public.accounts (account_id, account_name, sector, year_established, revenue,
                             employees, office_location, parent_account_id)
VALUES (1, 'Acme Corporation', 'technology', 1996, 1100.04, 2822, 'United States', NULL),
       (2, 'acme corporation', 'retail', 1993, 1242.32, 3027, 'United States', 1),
       (3, 'Acme  Corporation ', NULL, NULL, NULL, NULL, NULL, 2);
INSERT INTO public.products (product_id, product_name, series, sales_price)
VALUES (1, 'GTX Basic', 'GTX', 550), (2, 'GTX  basic', 'GTX', 4821);
INSERT INTO public.sales_agents (sales_agent_id, sales_agent_name, manager_name, regional_office)
VALUES (1, 'Anna Snelling', 'Dustin Brinkmann', 'Central'),
       (2, 'anna snelling', NULL, NULL);
INSERT INTO public.sales_pipeline VALUES
    ('B1', 1, 1, 1, 'Won', '2017-01-05', '2017-03-01', 1054),
    ('B2', 2, 2, 2, 'Lost', '2017-02-01', '2017-04-02', 0),
    ('B3', 1, 2, NULL, 'Engaging', '2017-05-03', NULL, NULL),
    ('B4', 2, 1, 3, 'Prospecting', NULL, NULL, NULL);
SELECT setval(pg_get_serial_sequence('public.accounts', 'account_id'), 100);
SELECT setval(pg_get_serial_sequence('public.products', 'product_id'), 100);
SELECT setval(pg_get_serial_sequence('public.sales_agents', 'sales_agent_id'), 100);
"""

DEAL_COLUMNS = ("deal_stage", "engage_date", "close_date", "close_value")
CASTS = {"engage_date": "date", "close_date": "date", "close_value": "numeric"}


@dataclass
class Writer:
    """Writes hostile rows and changes; each in a savepoint, so a row the source refuses
    (a duplicate name or key, a key too large for its index) is counted and skipped."""

    conn: psycopg.Connection
    stats: Counter = field(default_factory=Counter)
    dates: set = field(default_factory=set)  # every date string written

    def attempt(self, what: str, statements: list[tuple[str, tuple]]) -> bool:
        note(f"  {what}: {statements}")
        try:
            with self.conn.transaction():
                for statement, params in statements:
                    self.conn.execute(statement, params)
        except (psycopg.errors.IntegrityError, psycopg.errors.ProgramLimitExceeded) as exc:
            note(f"    refused by the source: {exc.sqlstate} {exc.diag.message_primary}")
            self.stats["refused by the source"] += 1
            return False
        self.stats[what] += 1
        return True

    def keys(self, table: str, where: str = "true") -> list:
        key = source.SOURCE_TABLES[table][0]
        query = f"SELECT {key} FROM public.{table} WHERE {where} ORDER BY 1"
        return [r[0] for r in self.conn.execute(query)]

    def pick(self, table: str, n: int | None, where: str = "true") -> object | None:
        keys = self.keys(table, where)
        return None if n is None or not keys else keys[n % len(keys)]

    def deal_values(self, values: dict) -> tuple[list[str], list[str], list]:
        columns, placeholders, params = [], [], []
        for column in DEAL_COLUMNS:
            if column in values:
                columns.append(column)
                cast = CASTS.get(column)
                placeholders.append(f"%s::{cast}" if cast else "%s")
                params.append(values[column])
                if column.endswith("_date") and values[column]:
                    self.dates.add(values[column])
        if "account" in values:
            columns.append("account_id")
            placeholders.append("%s")
            params.append(self.pick("accounts", values["account"]))
        return columns, placeholders, params

    def insert_deal(self, d: dict) -> None:
        columns, placeholders, params = self.deal_values(d)
        statement = (
            f"INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id,"
            f" {', '.join(columns)}) VALUES (%s, %s, %s, {', '.join(placeholders)})"
        )
        agent_id, product_id = (
            self.pick("sales_agents", d["agent"]),
            self.pick("products", d["product"]),
        )
        if agent_id is not None and product_id is not None:
            self.attempt(
                "dirty deal", [(statement, (d["opportunity_id"], agent_id, product_id, *params))]
            )

    def update_deal(self, what: str, key: object, values: dict) -> None:
        columns, placeholders, params = self.deal_values(values)
        if key is None or not columns:
            return
        sets = ", ".join(f"{c} = {p}" for c, p in zip(columns, placeholders, strict=True))
        self.attempt(
            what,
            [
                (
                    f"UPDATE public.sales_pipeline SET {sets} WHERE opportunity_id = %s",
                    (*params, key),
                )
            ],
        )

    def insert_account(self, a: dict) -> None:
        row = self.conn.execute(
            "SELECT coalesce(max(account_id), 0) + 1 FROM public.accounts"
        ).fetchone()
        new_id = row[0] if row else 1
        parents = [*self.keys("accounts"), new_id]
        parent = None if a["parent"] is None else parents[a["parent"] % len(parents)]
        self.attempt(
            "dirty account",
            [
                (
                    "INSERT INTO public.accounts VALUES"
                    " (%s, %s, %s, %s, %s::numeric, %s, %s, NULL)",
                    (
                        new_id,
                        a["account_name"],
                        a["sector"],
                        a["year_established"],
                        a["revenue"],
                        a["employees"],
                        a["office_location"],
                    ),
                ),
                ("UPDATE public.accounts SET parent_account_id = %s WHERE account_id = %s",
                 (parent, new_id)),
            ],
        )  # fmt: skip

    def update_account(self, key: object, a: dict) -> None:
        if key is None:
            return
        parent = self.pick("accounts", a["parent"])
        self.attempt(
            "dirty account update",
            [
                (
                    "UPDATE public.accounts SET account_name = %s, sector = %s,"
                    " year_established = %s, revenue = %s::numeric, employees = %s,"
                    " office_location = %s, parent_account_id = %s WHERE account_id = %s",
                    (
                        a["account_name"],
                        a["sector"],
                        a["year_established"],
                        a["revenue"],
                        a["employees"],
                        a["office_location"],
                        parent,
                        key,
                    ),
                )
            ],
        )

    def insert_product(self, p: dict) -> None:
        self.attempt(
            "dirty product",
            [
                (
                    "INSERT INTO public.products (product_name, series, sales_price)"
                    " VALUES (%s, %s, %s::numeric)",
                    (p["product_name"], p["series"], p["sales_price"]),
                )
            ],
        )

    def insert_agent(self, g: dict) -> None:
        self.attempt(
            "dirty agent",
            [
                (
                    "INSERT INTO public.sales_agents (sales_agent_name, manager_name,"
                    " regional_office) VALUES (%s, %s, %s)",
                    (g["sales_agent_name"], g["manager_name"], g["regional_office"]),
                )
            ],
        )

    def apply(self, kind: str, n: int, values: object) -> None:
        """One change of the incremental phase."""
        if kind == "insert_deal":
            self.insert_deal(values)
        elif kind in ("update_deal", "spoil_deal"):
            spoiled = dict(values)
            where = "true"
            if kind == "spoil_deal":  # a loaded deal made to break a hard rule
                spoiled.setdefault("close_value", "1e17")
                where = f"NOT coalesce({HARD_RULE}, false)"
            self.update_deal(kind, self.pick("sales_pipeline", n, where), spoiled)
        elif kind == "fix_deal":  # a quarantined deal corrected: it leaves the quarantine
            clean = {"deal_stage": "Won", "engage_date": "2017-01-02",
                     "close_date": "2017-02-03", "close_value": "10.50"}  # fmt: skip
            key = self.pick("sales_pipeline", n, f"coalesce({HARD_RULE}, false)")
            self.update_deal(kind, key, clean)
        elif kind == "delete_deal":
            key = self.pick("sales_pipeline", n)
            if key is not None:
                self.attempt(
                    kind, [("DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (key,))]
                )
        elif kind == "rekey_deal":
            key = self.pick("sales_pipeline", n)
            if key is not None:
                self.attempt(
                    kind,
                    [
                        (
                            "UPDATE public.sales_pipeline SET opportunity_id = %s"
                            " WHERE opportunity_id = %s",
                            (values, key),
                        )
                    ],
                )
        elif kind == "insert_account":
            self.insert_account(values)
        elif kind == "update_account":
            self.update_account(self.pick("accounts", n), values)
        elif kind == "delete_account":
            # Deals and subsidiaries let go first (the foreign keys insist), then it goes.
            key = self.pick("accounts", n)
            if key is not None:
                self.attempt(
                    kind,
                    [
                        ("UPDATE public.sales_pipeline SET account_id = NULL WHERE account_id = %s",
                         (key,)),
                        ("UPDATE public.accounts SET parent_account_id = NULL"
                         " WHERE parent_account_id = %s", (key,)),
                        ("DELETE FROM public.accounts WHERE account_id = %s", (key,)),
                    ],
                )  # fmt: skip
        elif kind == "account_cycle":
            a, b = self.pick("accounts", n), self.pick("accounts", values)
            if a is not None:
                update = "UPDATE public.accounts SET parent_account_id = %s WHERE account_id = %s"
                self.attempt(kind, [(update, (b, a)), (update, (a, b))])
        elif kind == "rekey_account":
            key = self.pick("accounts", n)
            if key is not None:  # refused while deals or subsidiaries refer to it
                self.attempt(
                    kind,
                    [("UPDATE public.accounts SET account_id = %s WHERE account_id = %s",
                      (values, key))],
                )  # fmt: skip
        elif kind == "rename_case":
            table, column = {
                "A": ("accounts", "account_name"),
                "P": ("products", "product_name"),
                "G": ("sales_agents", "sales_agent_name"),
            }[values]
            key = self.pick(table, n)
            if key is not None:
                key_column = source.SOURCE_TABLES[table][0]
                self.attempt(
                    kind,
                    [
                        (
                            f"UPDATE public.{table} SET {column} = upper({column}) || ' '"
                            f" WHERE {key_column} = %s",
                            (key,),
                        )
                    ],
                )
        elif kind == "insert_product":
            self.insert_product(values)
        elif kind == "update_product":
            key = self.pick("products", n)
            if key is not None:
                self.attempt(
                    kind,
                    [
                        (
                            "UPDATE public.products SET product_name = %s, series = %s,"
                            " sales_price = %s::numeric WHERE product_id = %s",
                            (values["product_name"], values["series"], values["sales_price"], key),
                        )
                    ],
                )
        elif kind in ("delete_product", "delete_agent"):
            table, column = (
                ("products", "product_id")
                if kind == "delete_product"
                else ("sales_agents", "sales_agent_id")
            )
            keys = self.keys(table)
            if len(keys) > 1:
                key = keys[n % len(keys)]
                heir = keys[(n + 1) % len(keys)]
                self.attempt(
                    kind,
                    [
                        (f"UPDATE public.sales_pipeline SET {column} = %s WHERE {column} = %s",
                         (heir, key)),
                        (f"DELETE FROM public.{table} WHERE {column} = %s", (key,)),
                    ],
                )  # fmt: skip
        elif kind == "insert_agent":
            self.insert_agent(values)
        elif kind == "update_agent":
            key = self.pick("sales_agents", n)
            if key is not None:
                self.attempt(
                    kind,
                    [
                        (
                            "UPDATE public.sales_agents SET sales_agent_name = %s,"
                            " manager_name = %s, regional_office = %s WHERE sales_agent_id = %s",
                            (
                                values["sales_agent_name"],
                                values["manager_name"],
                                values["regional_office"],
                                key,
                            ),
                        )
                    ],
                )
        elif kind == "many_huge_won":
            # More won deals at the largest accepted value than numeric(18, 2) can sum.
            self.dates.add("2017-06-01")
            self.attempt(
                kind,
                [
                    (
                        "INSERT INTO public.sales_pipeline"
                        " SELECT 'HUGE' || %s || '-' || g, 1, 1, NULL, 'Won', '2017-05-01',"
                        " '2017-06-01', %s::numeric FROM generate_series(1, 10001) AS g",
                        (n, MAX_VALUE),
                    )
                ],
            )
        else:
            raise AssertionError(kind)


def reset_source(conn: psycopg.Connection, dirty: dict, writer: Writer) -> None:
    """The clean base plus the dirty rows, replacing everything (as import-csv does)."""
    with conn.transaction():
        source.truncate_source(conn)
        conn.execute(BASE)
        writer.dates |= {"2017-01-05", "2017-03-01", "2017-02-01", "2017-04-02", "2017-05-03"}
        for a in dirty["accounts"]:
            writer.insert_account(a)
        for p in dirty["products"]:
            writer.insert_product(p)
        for g in dirty["agents"]:
            writer.insert_agent(g)
        for d in dirty["deals"]:
            writer.insert_deal(d)


# --- what the warehouse must show ------------------------------------------------------------

MAX_VALUE = "1000000000000"  # etl.config max_close_value, checked below
HARD_RULE = "close_value = 'NaN' OR abs(round(close_value, 2)) >= 1e16"
# What the warehouse lists as a data-quality issue of a live fact (rule: when it is due).
ISSUE_RULES = {
    "unknown deal stage": "f.deal_stage_key = -1",
    "engage date outside the calendar": "f.engage_date_key = -1 AND s.engage_date IS NOT NULL",
    "close date outside the calendar": "f.close_date_key = -1 AND s.close_date IS NOT NULL",
    "close value above max_close_value": f"abs(f.close_value) > {MAX_VALUE}",
}


def expected_content(oltp_dsn: str) -> tuple[wc.Content, set[str]]:
    """The live content the warehouse must show (deals breaking a hard rule left out), and
    the keys of those deals."""
    clean = (
        "WITH sales_pipeline AS (SELECT * FROM public.sales_pipeline"
        f" WHERE NOT coalesce({HARD_RULE}, false)) "
    )
    queries = {
        name: (clean + q.replace("public.sales_pipeline", "sales_pipeline"))
        if name in ("facts", "aggregate")
        else q
        for name, q in compare.SOURCE_QUERIES.items()
    }
    quarantined = {
        r[0]
        for r in dbtools.query(
            oltp_dsn,
            f"SELECT opportunity_id FROM public.sales_pipeline WHERE coalesce({HARD_RULE}, false)",
        )
    }
    return comparable(compare.content_of(oltp_dsn, queries)), quarantined


def comparable(content: wc.Content) -> wc.Content:
    """NaN is not equal to itself in Python; in PostgreSQL numeric it is."""

    def fix(row: tuple) -> tuple:
        return tuple("NaN" if isinstance(v, Decimal) and v.is_nan() else v for v in row)

    return wc.Content(
        **{
            f.name: {k: fix(v) for k, v in getattr(content, f.name).items()}
            for f in fields(content)
        }
    )


def quarantine_problems(olap_dsn: str, since_run: int, expected: set[str]) -> list[str]:
    """Deals of the source without a live fact must be exactly the expected ones, each with a
    quarantine record since since_run that holds its reason and the row as the source has it."""
    rows = dbtools.query(
        olap_dsn,
        """
        SELECT s.opportunity_id, q.message,
               q.record = jsonb_build_object(
                   'opportunity_id', s.opportunity_id, 'sales_agent_id', s.sales_agent_id,
                   'product_id', s.product_id, 'account_id', s.account_id,
                   'deal_stage', s.deal_stage, 'engage_date', s.engage_date,
                   'close_date', s.close_date, 'close_value', s.close_value)
          FROM src.sales_pipeline AS s
          LEFT JOIN LATERAL (
              SELECT e.message, e.record FROM etl.error_log AS e
               WHERE e.kind = 'quarantine' AND e.table_name = 'sales_pipeline'
                 AND e.business_key = s.opportunity_id AND e.run_id >= %s
               ORDER BY e.error_id DESC LIMIT 1) AS q ON true
         WHERE NOT EXISTS (SELECT FROM dwh.fact_sales_performance AS f
                            WHERE f.opportunity_id = s.opportunity_id AND NOT f.is_deleted)""",
        (since_run,),
    )
    out = []
    unloaded = {r[0] for r in rows}
    if unloaded != expected:
        out.append(
            f"deals not loaded {sorted(unloaded - expected)[:5]!r}, "
            f"loaded though quarantine was due {sorted(expected - unloaded)[:5]!r}"
        )
    for key, message, same in rows:
        if not message:
            out.append(f"deal {key!r}: not loaded and no quarantine record")
        elif not same:
            out.append(f"deal {key!r}: the quarantine record is not the row as the source has it")
    return out


def issue_problems(olap_dsn: str, since_run: int) -> list[str]:
    """Every live fact on an Unknown member its source row does not explain (an unresolved
    stage, a date outside the calendar), or with a value above max_close_value, is listed in
    etl.data_quality_issue under its rule since since_run."""
    due = " UNION ALL ".join(
        f"SELECT f.opportunity_id, '{rule}' AS rule FROM dwh.fact_sales_performance AS f"
        f" JOIN src.sales_pipeline AS s USING (opportunity_id) WHERE NOT f.is_deleted AND {cond}"
        for rule, cond in ISSUE_RULES.items()
    )
    rows = dbtools.query(
        olap_dsn,
        f"SELECT d.opportunity_id, d.rule FROM ({due}) AS d"
        " WHERE NOT EXISTS (SELECT FROM etl.data_quality_issue AS i"
        "  WHERE i.business_key = d.opportunity_id AND i.rule = d.rule AND i.run_id >= %s)",
        (since_run,),
    )
    return [f"deal {key!r}: no data-quality issue {rule!r}" for key, rule in rows[:8]]


def dim_date_problems(olap_dsn: str, dates: set[str]) -> list[str]:
    """dim_date within date_min .. date_max and within the margin of the in-range dates the
    source held (written dates that PostgreSQL reads as in range)."""
    first, last, days = dbtools.query(
        olap_dsn,
        "SELECT min(full_date), max(full_date), count(*) FROM dwh.dim_date WHERE date_key <> -1",
    )[0]
    if not days:
        return []
    seen = [
        r[0]
        for r in dbtools.query(
            olap_dsn,
            "SELECT d FROM unnest(%s::text[]) AS t (s) CROSS JOIN LATERAL (SELECT s::date AS d) x"
            " WHERE d BETWEEN %s AND %s",
            (sorted(dates), DATE_MIN, DATE_MAX),
        )
    ]
    low = max(min(seen) - timedelta(days=366), DATE_MIN) if seen else DATE_MIN
    high = min(max(seen) + timedelta(days=366), DATE_MAX) if seen else DATE_MAX
    if first < low or last > high or days > (high - low).days + 1:
        return [f"dim_date holds {days} days {first} .. {last}; expected within {low} .. {high}"]
    return []


def view_problems(olap_dsn: str) -> list[str]:
    """Every reporting view answers (casts to a fixed precision overflow on hostile sums)."""
    out = []
    with psycopg.connect(olap_dsn, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '20s'")  # a few rows: a plan gone wrong
        for view in reporting.VIEWS:
            try:
                conn.execute(f"SELECT * FROM {view}").fetchall()
            except psycopg.Error as exc:
                plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN SELECT * FROM {view}"))
                out.append(f"{view}: {exc.sqlstate} {exc.diag.message_primary}\n{plan}")
    return out


def run_problems(olap_dsn: str) -> list[str]:
    run_id, pipeline, status, message = wc.last_run(olap_dsn)
    if status != "succeeded":
        return [f"{pipeline} run {run_id} {status}: {message}"]
    return []


def call(olap_dsn: str, statement: str) -> list[str]:
    """CALL a pipeline entry point; a failure is a problem to report, not an exception."""
    try:
        dbtools.execute(olap_dsn, statement)
    except psycopg.Error as exc:
        return [f"{statement} failed: {exc.sqlstate} {exc.diag.message_primary}"]
    return run_problems(olap_dsn)


# --- the test ---------------------------------------------------------------------------------


@dataclass
class Rig:
    pair: dbtools.Warehouse
    fresh_dsn: str
    stats: Counter = field(default_factory=Counter)


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest, warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    """The module's source and incremental warehouse, and a second warehouse on the same
    source that only does initial loads."""
    config = dict(dbtools.query(warehouse.olap_dsn, "SELECT key, value FROM etl.config"))
    assert (config["date_min"], config["date_max"]) == (str(DATE_MIN), str(DATE_MAX))
    assert (str(DATE_MIN), str(DATE_MAX)) == compare.CALENDAR
    assert config["max_close_value"] == MAX_VALUE
    name, fresh_dsn = wc.attach_warehouse(warehouse.oltp_dsn, "hostile_fresh")
    r = Rig(warehouse, fresh_dsn)
    yield r
    dbtools.report(
        request,
        f"\nhostile source: {r.stats['examples']} examples, "
        + ", ".join(f"{n} {what}" for what, n in sorted(r.stats.items()) if what != "examples"),
    )
    dbtools.drop_database(name)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("HOSTILE_RANDOM"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(dirty=dirty_source, changes=transactions)
# A key that fits the source's own index, and little room to spare: it must not jam the
# change window (composite indexes add the table name to it). One such deal quarantined,
# then corrected in a later transaction of the same window; another inserted and deleted.
# (An unknown stage is no longer quarantined: the first deal breaks the hard rule by its value.)
@example(
    dirty={"accounts": [], "products": [], "agents": [], "deals": []},
    changes=[
        [("insert_deal", 0, {"opportunity_id": incompressible(2680, 1), "agent": 0,
                             "product": 0, "account": None, "deal_stage": "Negotiating",
                             "engage_date": None, "close_date": None, "close_value": "NaN"})],
        [("fix_deal", 0, None)],
        [("insert_deal", 0, {"opportunity_id": "Z" + incompressible(2680, 3), "agent": 0,
                             "product": 0, "account": None, "deal_stage": "Won",
                             "engage_date": None, "close_date": None, "close_value": None})],
        [("delete_deal", 4, None)],  # B1 .. B4, then 'Z...' before the Cyrillic key
    ],
)  # fmt: skip
# The same key loaded by the initial load, quarantined by the update (its fact retired).
@example(
    dirty={"accounts": [], "products": [], "agents": [], "deals": [
        {"opportunity_id": incompressible(2680, 2), "agent": 0, "product": 0, "account": None,
         "deal_stage": "Won", "engage_date": "2017-01-01", "close_date": "2017-02-01",
         "close_value": "10"}]},
    changes=[[("spoil_deal", 4, {"close_value": "1e16"})]],
)  # fmt: skip
# A group whose won value passes numeric(18, 2): 10,001 deals at max_close_value.
@example(
    dirty={"accounts": [], "products": [], "agents": [], "deals": []},
    changes=[[("many_huge_won", 0, None)]],
)
# An open deal on a product priced at infinity, and one won at a price beyond any numeric(p, s):
# the reporting views sum list prices.
@example(
    dirty={
        "accounts": [],
        "products": [{"product_name": "Pricey", "series": None, "sales_price": "Infinity"},
                     {"product_name": "Pricier", "series": None, "sales_price": "1e1000"}],
        "agents": [],
        "deals": [],
    },
    changes=[[
        ("insert_deal", 0, {"opportunity_id": "OPEN", "agent": 0, "product": 2, "account": None,
                            "deal_stage": "Engaging", "engage_date": "2017-01-01",
                            "close_date": None, "close_value": None}),
        ("insert_deal", 0, {"opportunity_id": "WON", "agent": 0, "product": 3, "account": None,
                            "deal_stage": "Won", "engage_date": "2017-01-01",
                            "close_date": "2017-02-01", "close_value": "5"}),
    ]],
)  # fmt: skip
def test_hostile_rows_are_loaded_or_quarantined(rig: Rig, dirty: dict, changes: list) -> None:
    oltp, olap, fresh = rig.pair.oltp_dsn, rig.pair.olap_dsn, rig.fresh_dsn
    rig.stats["examples"] += 1
    with psycopg.connect(oltp, autocommit=True) as conn:
        writer = Writer(conn)
        note("initial rows:")
        reset_source(conn, dirty, writer)
        first_run = int(dbtools.scalar(olap, "SELECT coalesce(max(run_id), 0) + 1 FROM etl.run"))
        problems = call(olap, "CALL etl.run_initial_load()")
        assert not problems, problems
        content, quarantined = expected_content(oltp)
        problems += wc.content_differences(
            comparable(wc.live_content(olap)), content, ("initial", "source")
        )
        problems += quarantine_problems(olap, first_run, quarantined)
        problems += issue_problems(olap, first_run)
        problems += dim_date_problems(olap, writer.dates)
        assert not problems, "initial load:\n  " + "\n  ".join(problems)

        note("changes:")
        for transaction in changes:
            with conn.transaction():
                for kind, n, values in transaction:
                    writer.apply(kind, n, values)
    rig.stats.update(writer.stats)

    problems = call(olap, "CALL etl.run_incremental_update()")
    assert not problems, problems
    problems = call(fresh, "CALL etl.run_initial_load()")
    assert not problems, problems
    fresh_run = int(dbtools.scalar(fresh, "SELECT max(run_id) FROM etl.run"))
    content, quarantined = expected_content(oltp)
    rig.stats["deals quarantined at the end"] += len(quarantined)
    incremental = comparable(wc.live_content(olap))
    problems += wc.content_differences(incremental, comparable(wc.live_content(fresh)))
    problems += wc.content_differences(incremental, content, ("incremental", "source"))
    problems += quarantine_problems(olap, first_run, quarantined)
    problems += quarantine_problems(fresh, fresh_run, quarantined)
    problems += issue_problems(olap, first_run) + issue_problems(fresh, fresh_run)
    problems += dim_date_problems(olap, writer.dates)
    problems += dim_date_problems(fresh, writer.dates)
    problems += wc.consistency_problems(olap)
    problems += view_problems(olap) + view_problems(fresh)
    assert not problems, "after the incremental update:\n  " + "\n  ".join(problems)


STEPS_AFTER_EXTRACT = wc.INITIAL_STEPS[1:]


def test_dim_date_statistics_count_the_days_after_a_rebuild(rig: Rig) -> None:
    """Statistics of dim_date taken while a rebuild has emptied it (autovacuum may take them
    then) say one row on hundreds of pages; once the rebuild put 40,000 days back, the
    planner believed one and cross-joined dim_date with itself in dwh.v_pipeline_by_stage
    (minutes for six deals, seen in the property above). Extending dim_date analyzes it."""
    oltp, olap = rig.pair.oltp_dsn, rig.pair.olap_dsn
    with psycopg.connect(oltp, autocommit=True) as conn, conn.transaction():
        source.truncate_source(conn)
        conn.execute(BASE)
        conn.execute(
            "INSERT INTO public.sales_pipeline VALUES"
            " ('WIDE', 1, 1, NULL, 'Won', '1990-01-01', '2099-12-31', 5)"
        )
    assert not call(olap, "CALL etl.run_initial_load()")
    with psycopg.connect(olap, autocommit=True) as conn:
        run_id = conn.execute("CALL etl.start_run('initial_load', NULL, NULL)").fetchone()[0]
        conn.execute("CALL etl.extract_source(%s)", (run_id,))
        conn.execute("ANALYZE dwh.dim_date")  # as autovacuum may, between two steps
        for step in STEPS_AFTER_EXTRACT:
            conn.execute(f"CALL {step}(%s)", (run_id,))
        estimated, days = conn.execute(
            "SELECT reltuples, (SELECT count(*) FROM dwh.dim_date) FROM pg_class"
            " WHERE oid = 'dwh.dim_date'::regclass"
        ).fetchone()
    assert run_problems(olap) == []
    assert days > 40_000
    assert abs(estimated - days) < days / 10, (estimated, days)
    assert view_problems(olap) == []
