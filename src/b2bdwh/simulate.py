"""`b2bdwh simulate`: realistic day-to-day changes to the CRM source, committed one by one.

A change is one row inserted, updated or deleted. Kinds, in a mix like a
sales team's working day:

- advance: an open deal moves on: Prospecting -> Engaging (engage date set),
  or Engaging -> Won/Lost (close date, close value: near the list price for
  Won, 0 for Lost; an account is assigned when the deal had none);
- create: a new opportunity, mostly Prospecting or Engaging;
- correct: the value of a Won deal is corrected;
- delete: an opportunity is removed;
- account: sector, revenue, employees or office location of an account;
- agent: a sales agent moves to another manager (and that manager's office);
- product: a list price or series changes (rare; at least once from 200
  changes on).

Most transactions hold one change; about 8% hold several (a deal created and
advanced, closed and corrected, corrected twice, created and deleted; a
product's price changed twice; a manager moving office with all their agents;
a few account edits). Every update really changes the row.

Rows are chosen from the starting state with ordered queries and a seeded
random stream, so the same seed on the same starting state gives the same
changes. Dates follow a simulated clock that starts at the latest date in the
source and moves one day every so many changes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TextIO

import psycopg

from b2bdwh import generate, settings
from b2bdwh.db import CliError, connect, describe

HELP = "apply realistic changes to the CRM source, each in its own committed transaction"

DEFAULT_SEED = 1
KINDS = ("advance", "create", "correct", "delete", "account", "agent", "product")
# Deals change most; accounts now and then; agents and products rarely (on a
# 35-agent, 7-product source even these rates are brisk: 10,000 changes move
# each agent about 6 times).
KIND_WEIGHTS = (38, 32, 9, 5, 10, 2.5, 0.4)
MULTI_SHARE = 0.08  # of transactions: several changes in one
MULTI_TEMPLATES = {
    "create_advance": 20,
    "advance_twice": 12,
    "close_correct": 15,
    "correct_twice": 8,
    "create_delete": 5,
    "accounts": 15,
    "manager_moves": 0.5,
    "product_twice": 1,
    "mixed": 20,
}
PRODUCT_FORCED_FROM = 200  # from this many changes on, at least one product change
SYNC_EVERY = 500  # transactions sent before waiting for the server's answers
POOL_FACTOR = 3  # deals sampled per requested change (at least POOL_MIN)
POOL_MIN = 5_000
STALE_DAYS = 140  # deals open longer than this are mostly lost
WON_SHARE = 0.63  # of closing deals, when not stale
DEFAULT_DAY = generate.LAST_DAY  # the clock's start when the source has no dates
PLAUSIBLE = (date(1900, 1, 1), date(2200, 1, 1))  # dates outside are data errors
FUTURE_DAYS = 30  # deals engaged further ahead of the clock than this are left alone
ID_ALPHABET = generate.ID_ALPHABET

INSERT_DEAL = (
    "INSERT INTO public.sales_pipeline (opportunity_id, sales_agent_id, product_id, account_id,"
    " deal_stage, engage_date, close_date, close_value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
UPDATE_DEAL = (
    "UPDATE public.sales_pipeline SET account_id = %s, deal_stage = %s, engage_date = %s,"
    " close_date = %s, close_value = %s WHERE opportunity_id = %s"
)
UPDATE_VALUE = "UPDATE public.sales_pipeline SET close_value = %s WHERE opportunity_id = %s"
DELETE_DEAL = "DELETE FROM public.sales_pipeline WHERE opportunity_id = %s"
UPDATE_ACCOUNT = (
    "UPDATE public.accounts SET sector = %s, revenue = %s, employees = %s,"
    " office_location = %s WHERE account_id = %s"
)
UPDATE_AGENT = (
    "UPDATE public.sales_agents SET manager_name = %s, regional_office = %s"
    " WHERE sales_agent_id = %s"
)
UPDATE_PRODUCT = "UPDATE public.products SET series = %s, sales_price = %s WHERE product_id = %s"


@dataclass(frozen=True)
class Change:
    kind: str
    query: str
    params: tuple[object, ...]


@dataclass
class Deal:
    id: str
    agent: int
    product: int
    account: int | None
    stage: str
    engage: date | None
    close: date | None
    value: Decimal | None


@dataclass
class Account:
    id: int
    sector: str | None
    revenue: Decimal | None
    employees: int | None
    location: str | None


@dataclass
class Agent:
    id: int
    manager: str | None
    office: str | None


@dataclass
class Product:
    id: int
    name: str
    series: str | None
    price: Decimal | None
    anchor: Decimal  # the price at the start: prices move around it, never drift away
    weight: float


class Bag:
    """A set with uniform random choice; add and remove in constant time."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: str) -> None:
        if item not in self.where:
            self.where[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        index = self.where.pop(item, None)
        if index is None:
            return
        last = self.items.pop()
        if index < len(self.items):
            self.items[index] = last
            self.where[last] = index

    def pick(self, rng: random.Random) -> str:
        return self.items[rng.randrange(len(self.items))]


@dataclass
class Summary:
    changes: dict[str, int]
    transactions: int
    multi_transactions: int
    first_day: date
    last_day: date
    seconds: float
    sampled_deals: int = 0
    total_deals: int = 0

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    def text(self) -> str:
        lines = [
            f"Simulated {self.total:,} changes in {self.transactions:,} committed transactions "
            f"({self.multi_transactions:,} with several changes):"
        ]
        for kind in KINDS:
            n = self.changes.get(kind, 0)
            share = 100.0 * n / self.total if self.total else 0.0
            lines.append(f"  {kind:<8} {n:>10,}  {share:5.1f}%")
        lines.append(f"Simulated dates {self.first_day} .. {self.last_day}")
        lines.append(f"Elapsed: {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass
class Simulation:
    """The source as far as the simulation knows it, and the changes it draws from it."""

    rng: random.Random
    deals: dict[str, Deal]
    accounts: list[Account]
    agents: list[Agent]
    products: list[Product]
    new_ids: Iterator[str]
    day: date
    changes_per_day: int
    sectors: list[str]
    countries: list[str]
    offices: list[str]
    stages: dict[str, Bag] = field(default_factory=dict)
    everything: Bag = field(default_factory=Bag)
    manager_office: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage in ("Prospecting", "Engaging", "Won"):
            self.stages[stage] = Bag()
        for deal in self.deals.values():
            self._index(deal)
        for agent in self.agents:
            if agent.manager is not None:
                self.manager_office.setdefault(agent.manager, agent.office)
        self._product_weights = [p.weight for p in self.products]
        self._products_by_id = {p.id: p for p in self.products}

    # --- bookkeeping ---

    def _index(self, deal: Deal) -> None:
        self.everything.add(deal.id)
        if deal.stage in self.stages:
            self.stages[deal.stage].add(deal.id)

    def _unindex(self, deal: Deal) -> None:
        self.everything.discard(deal.id)
        if deal.stage in self.stages:
            self.stages[deal.stage].discard(deal.id)

    def tick(self) -> None:
        if self.rng.random() < 1.0 / self.changes_per_day:
            self.day += timedelta(days=1)

    def _won_value(self, product_id: int) -> Decimal:
        product = self._product(product_id)
        price = product.price if product and product.price is not None else Decimal(1000)
        factor = self.rng.triangular(*generate.WON_FACTOR[::2], generate.WON_FACTOR[1])
        return Decimal(max(1, round(float(price) * factor)))

    def _product(self, product_id: int) -> Product | None:
        return self._products_by_id.get(product_id)

    def _some_account(self) -> int | None:
        return self.rng.choice(self.accounts).id if self.accounts else None

    def _open_deal(self) -> Deal | None:
        prospecting, engaging = self.stages["Prospecting"], self.stages["Engaging"]
        n = len(prospecting) + len(engaging)
        if n == 0:
            return None
        k = self.rng.randrange(n)
        bag = prospecting if k < len(prospecting) else engaging
        return self.deals[bag.pick(self.rng)]

    # --- one change each ---

    def create(self, stage: str | None = None) -> Change:
        rng = self.rng
        if stage is None:
            stage = rng.choices(("Prospecting", "Engaging", "Won", "Lost"), (55, 40, 3, 2))[0]
        if stage in ("Won", "Lost") and not self.accounts:
            stage = "Engaging"
        agent = rng.choice(self.agents).id
        product = rng.choices(self.products, self._product_weights)[0].id
        account, engage, close, value = None, None, None, None
        if stage == "Prospecting":
            account = self._some_account() if rng.random() < 0.1 else None
        elif stage == "Engaging":
            account = self._some_account() if rng.random() < 0.4 else None
            engage = self.day - timedelta(days=rng.randint(0, 7))
        else:
            account = self._some_account()
            engage = self.day - timedelta(days=rng.randint(7, 90))
            close = engage + timedelta(days=rng.randint(1, (self.day - engage).days))
            value = self._won_value(product) if stage == "Won" else Decimal(0)
        deal = Deal(next(self.new_ids), agent, product, account, stage, engage, close, value)
        self.deals[deal.id] = deal
        self._index(deal)
        params = (deal.id, agent, product, account, stage, engage, close, value)
        return Change("create", INSERT_DEAL, params)

    def advance(self, deal: Deal | None = None, *, won: bool | None = None) -> Change | None:
        rng = self.rng
        deal = deal or self._open_deal()
        if deal is None or deal.stage not in ("Prospecting", "Engaging"):
            return None
        if deal.stage == "Prospecting":
            stage, engage, close, value = "Engaging", self.day, None, None
            account = deal.account
            if account is None and rng.random() < 0.2:
                account = self._some_account()
        else:
            if not self.accounts and deal.account is None:
                return None  # only open deals may lack an account
            if deal.engage and deal.engage > self.day + timedelta(days=FUTURE_DAYS):
                return None  # a date error: closing it would carry the error on
            close = max(self.day, deal.engage or self.day)
            engage = deal.engage or close
            stale = (close - engage).days > STALE_DAYS
            if won is None:
                won = rng.random() < (WON_SHARE / 2 if stale else WON_SHARE)
            stage = "Won" if won else "Lost"
            value = self._won_value(deal.product) if won else Decimal(0)
            account = deal.account if deal.account is not None else self._some_account()
        self._unindex(deal)
        deal.stage, deal.engage, deal.close = stage, engage, close
        deal.value, deal.account = value, account
        self._index(deal)
        params = (account, stage, engage, close, value, deal.id)
        return Change("advance", UPDATE_DEAL, params)

    def correct(self, deal: Deal | None = None) -> Change | None:
        if deal is None:
            if not self.stages["Won"]:
                return None
            deal = self.deals[self.stages["Won"].pick(self.rng)]
        if deal.stage != "Won":
            return None
        value = self._won_value(deal.product)
        if value == deal.value:
            value += 1
        deal.value = value
        return Change("correct", UPDATE_VALUE, (value, deal.id))

    def delete(self, deal: Deal | None = None) -> Change | None:
        if deal is None:
            if not self.everything:
                return None
            if self.rng.random() < 0.6:
                deal = self._open_deal()
            deal = deal or self.deals[self.everything.pick(self.rng)]
        self._unindex(deal)
        del self.deals[deal.id]
        return Change("delete", DELETE_DEAL, (deal.id,))

    def account(self, account: Account | None = None) -> Change | None:
        if not self.accounts:
            return None
        rng = self.rng
        a = account or rng.choice(self.accounts)
        what = rng.choices(("sector", "revenue", "employees", "location"), (3, 3, 2, 2))[0]
        if what == "sector":
            a.sector = rng.choice([s for s in self.sectors if s != a.sector])
        elif what == "revenue":
            old = a.revenue if a.revenue is not None else Decimal(100)
            cents = max(1, round(float(old) * rng.uniform(0.85, 1.25) * 100))
            revenue = Decimal(cents).scaleb(-2)
            a.revenue = revenue if revenue != a.revenue else revenue + Decimal("0.01")
            if rng.random() < 0.5:  # headcount follows the business
                a.employees = self._new_headcount(a.employees)
        elif what == "employees":
            a.employees = self._new_headcount(a.employees)
        else:
            a.location = rng.choice([c for c in self.countries if c != a.location])
        params = (a.sector, a.revenue, a.employees, a.location, a.id)
        return Change("account", UPDATE_ACCOUNT, params)

    def _new_headcount(self, old: int | None) -> int:
        base = old if old is not None else 100
        new = max(1, round(base * self.rng.uniform(0.8, 1.3)))
        return new if new != old else new + 1

    def agent(self) -> Change:
        rng = self.rng
        agent = rng.choice(self.agents)
        managers = sorted(m for m in self.manager_office if m != agent.manager)
        if managers:
            agent.manager = rng.choice(managers)
            # The agent joins the new manager's office (often the same one).
            agent.office = self.manager_office[agent.manager] or agent.office
        else:  # a one-manager team: the agent changes office
            agent.office = rng.choice([o for o in self.offices if o != agent.office])
        return Change("agent", UPDATE_AGENT, (agent.manager, agent.office, agent.id))

    def manager_moves(self, budget: int) -> list[Change]:
        """A manager moves to another office, and so do all of their agents."""
        rng = self.rng
        managers = sorted(self.manager_office)
        if not managers:
            return []
        manager = rng.choice(managers)
        team = [a for a in self.agents if a.manager == manager]
        offices = [o for o in self.offices if o != self.manager_office[manager]]
        if not team or len(team) > budget or not offices:
            return []
        office = rng.choice(offices)
        self.manager_office[manager] = office
        changes = []
        for agent in team:
            if agent.office != office:
                agent.office = office
                changes.append(Change("agent", UPDATE_AGENT, (manager, office, agent.id)))
        return changes

    def product(self, product: Product | None = None, *, price_only: bool = False) -> Change:
        rng = self.rng
        p = product or rng.choice(self.products)
        series_sizes: dict[str | None, int] = {}
        for other in self.products:
            series_sizes[other.series] = series_sizes.get(other.series, 0) + 1
        others = sorted(s for s in series_sizes if s is not None and s != p.series)
        if not price_only and others and series_sizes[p.series] > 1 and rng.random() < 0.1:
            p.series = rng.choice(others)  # re-classified; its old series keeps others
        else:
            price = Decimal(max(1, round(float(p.anchor) * rng.uniform(0.85, 1.2))))
            p.price = price if price != p.price else price + 1
        return Change("product", UPDATE_PRODUCT, (p.series, p.price, p.id))

    # --- transactions ---

    def single(self, kind: str) -> list[Change]:
        made: Change | None
        if kind == "advance":
            made = self.advance()
        elif kind == "correct":
            made = self.correct()
        elif kind == "delete":
            made = self.delete()
        elif kind == "account":
            made = self.account()
        elif kind == "agent":
            made = self.agent()
        elif kind == "product":
            made = self.product()
        else:
            made = None
        return [made or self.create()]

    def several(self, budget: int) -> list[Change]:
        """A transaction of several changes (at most budget), or [] if none fits now."""
        rng = self.rng
        template = rng.choices(list(MULTI_TEMPLATES), list(MULTI_TEMPLATES.values()))[0]
        changes: list[Change | None] = []
        if template == "create_advance":
            first = self.create("Prospecting")
            changes = [first, self.advance(self.deals[str(first.params[0])])]
        elif template == "advance_twice":
            if self.stages["Prospecting"]:
                deal = self.deals[self.stages["Prospecting"].pick(rng)]
                changes = [self.advance(deal), self.advance(deal)]
        elif template == "close_correct":
            if self.stages["Engaging"]:
                deal = self.deals[self.stages["Engaging"].pick(rng)]
                changes = [self.advance(deal, won=True), self.correct(deal)]
        elif template == "correct_twice":
            if self.stages["Won"]:
                deal = self.deals[self.stages["Won"].pick(rng)]
                changes = [self.correct(deal), self.correct(deal)]
        elif template == "create_delete":
            first = self.create()
            changes = [first, self.delete(self.deals[str(first.params[0])])]
        elif template == "accounts":
            if len(self.accounts) >= 2:
                n = min(budget, rng.randint(2, 4), len(self.accounts))
                changes = [self.account(a) for a in rng.sample(self.accounts, n)]
        elif template == "manager_moves":
            changes = list(self.manager_moves(budget))
        elif template == "product_twice":
            changes = self.product_twice()
        else:
            n = min(budget, rng.randint(2, 4))
            for _ in range(n):
                changes += self.single(rng.choices(KINDS, KIND_WEIGHTS)[0])
        return [c for c in changes if c is not None]

    def product_twice(self) -> list[Change]:
        product = self.rng.choice(self.products)
        return [self.product(product, price_only=True), self.product(product, price_only=True)]

    def transactions(self, k: int) -> Iterator[list[Change]]:
        rng = self.rng
        done = 0
        product_changes = 0
        while done < k:
            left = k - done
            tx: list[Change] = []
            forced = k >= PRODUCT_FORCED_FROM and not product_changes and done >= k // 2
            if forced:
                tx = self.product_twice() if left >= 2 else [self.product()]
            elif left >= 2 and rng.random() < MULTI_SHARE:
                tx = self.several(left)
            if not tx:
                tx = self.single(rng.choices(KINDS, KIND_WEIGHTS)[0])
            product_changes += sum(c.kind == "product" for c in tx)
            for _ in tx:
                self.tick()
            done += len(tx)
            yield tx


# --- the starting state ---


def _deal(row: tuple) -> Deal:
    return Deal(*row)


def _load_state(conn: psycopg.Connection, k: int, seed: int) -> tuple[dict[str, Deal], int, date]:
    """A deterministic sample of the deals (all of them when few), their count, the start day.

    The simulated clock starts at the latest date in the source, leaving out
    dates no CRM could hold (before 1900, after 2200) and outliers more than a
    year after the 99th percentile of the sampled dates.
    """
    row = conn.execute("SELECT count(*) FROM public.sales_pipeline").fetchone()
    total = int(row[0]) if row else 0
    want = max(POOL_MIN, POOL_FACTOR * k)
    columns = (
        "opportunity_id, sales_agent_id, product_id, account_id, deal_stage, engage_date,"
        " close_date, close_value"
    )
    sampled = total > want
    if not sampled:
        rows = conn.execute(
            f"SELECT {columns} FROM public.sales_pipeline ORDER BY opportunity_id"
        ).fetchall()
    else:
        # Rows whose keyed hash falls under a threshold: the same rows for the same
        # contents and seed, whatever their physical order.
        threshold = math.ceil(want / total * 2**32)
        rows = conn.execute(
            f"SELECT {columns} FROM public.sales_pipeline"
            " WHERE (hashtextextended(opportunity_id, %s) & 4294967295) < %s"
            " ORDER BY opportunity_id",
            (seed & 0x7FFF_FFFF_FFFF_FFFF, threshold),
        ).fetchall()
    deals = {r[0]: _deal(r) for r in rows}
    seen = sorted(
        d
        for deal in deals.values()
        for d in (deal.engage, deal.close)
        if d is not None and PLAUSIBLE[0] <= d <= PLAUSIBLE[1]
    )
    if not seen:
        return deals, total, DEFAULT_DAY
    bound = min(seen[int(0.99 * (len(seen) - 1))] + timedelta(days=365), PLAUSIBLE[1])
    if not sampled:
        return deals, total, max(d for d in seen if d <= bound)
    row = conn.execute(
        "SELECT greatest(max(engage_date) FILTER (WHERE engage_date BETWEEN %(lo)s AND %(hi)s),"
        " max(close_date) FILTER (WHERE close_date BETWEEN %(lo)s AND %(hi)s))"
        " FROM public.sales_pipeline",
        {"lo": PLAUSIBLE[0], "hi": bound},
    ).fetchone()
    return deals, total, (row[0] if row and row[0] else DEFAULT_DAY)


def _new_ids(conn: psycopg.Connection, rng: random.Random, n: int) -> Iterator[str]:
    """Fresh 8-character opportunity ids, none of them in the source now.

    The first batch (enough for n creates) is checked at once, before any change.
    """
    seen: set[str] = set()

    def batch() -> list[str]:
        candidates = []
        while len(candidates) < min(max(n, 16), 50_000):
            candidate = "".join(rng.choices(ID_ALPHABET, k=8))
            if candidate not in seen:
                seen.add(candidate)
                candidates.append(candidate)
        taken = {
            r[0]
            for r in conn.execute(
                "SELECT opportunity_id FROM public.sales_pipeline WHERE opportunity_id = ANY(%s)",
                (candidates,),
            )
        }
        return [c for c in candidates if c not in taken]

    def more() -> Iterator[str]:
        while True:
            yield from batch()

    return itertools.chain(batch(), more())


def _prepare(conn: psycopg.Connection, k: int, seed: int) -> tuple[Simulation, int, int]:
    rng = random.Random(f"b2bdwh-simulate/{seed}")
    deals, total, last_day = _load_state(conn, k, seed)
    accounts = [
        Account(*r)
        for r in conn.execute(
            "SELECT account_id, sector, revenue, employees, office_location"
            " FROM public.accounts ORDER BY account_id"
        )
    ]
    agents = [
        Agent(*r)
        for r in conn.execute(
            "SELECT sales_agent_id, manager_name, regional_office FROM public.sales_agents"
            " ORDER BY sales_agent_id"
        )
    ]
    popularity = dict(zip((p[0] for p in generate.PRODUCTS), generate.PRODUCT_WEIGHTS, strict=True))
    usual = sum(popularity.values()) / len(popularity)
    products = [
        Product(
            id=r[0],
            name=r[1],
            series=r[2],
            price=r[3],
            anchor=r[3] if r[3] is not None and r[3] > 0 else Decimal(1000),
            weight=popularity.get(r[1], usual),
        )
        for r in conn.execute(
            "SELECT product_id, product_name, series, sales_price FROM public.products"
            " ORDER BY product_id"
        )
    ]
    if not agents or not products:
        raise CliError(
            "the source has no sales agents or no products to simulate changes on: "
            "fill it first with `b2bdwh generate` or `b2bdwh import-csv`"
        )
    known_sectors = {s for s, _ in generate.SECTORS} | {a.sector for a in accounts if a.sector}
    known_countries = {c for c, _ in generate.COUNTRIES} | {
        a.location for a in accounts if a.location
    }
    known_offices = set(generate.OFFICES) | {a.office for a in agents if a.office}
    id_rng = random.Random(f"b2bdwh-simulate/{seed}/ids")
    sim = Simulation(
        rng=rng,
        deals=deals,
        accounts=accounts,
        agents=agents,
        products=products,
        new_ids=_new_ids(conn, id_rng, k),
        day=last_day,
        changes_per_day=max(200, total // 30),
        sectors=sorted(known_sectors),
        countries=sorted(known_countries),
        offices=sorted(known_offices),
    )
    return sim, len(deals), total


def transactions(
    conn: psycopg.Connection, changes: int, seed: int = DEFAULT_SEED
) -> Iterator[list[Change]]:
    """The transactions `simulate` would commit on this starting state and seed, for a
    caller that commits them its own way (bench/soak.py: several writers at a steady rate).
    Each is a list of changes to execute between BEGIN and COMMIT."""
    sim, _sampled, _total = _prepare(conn, changes, seed)
    return sim.transactions(changes)


def simulate(
    dsn: str, changes: int, seed: int = DEFAULT_SEED, *, progress: TextIO | None = None
) -> Summary:
    """Apply `changes` changes to the source, each transaction committed on its own."""
    if isinstance(changes, bool) or not isinstance(changes, int) or changes < 0:
        raise CliError(f"the number of changes must be a whole number >= 0, not {changes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CliError(f"seed must be an integer, not {seed!r}")
    started = time.monotonic()
    counts = dict.fromkeys(KINDS, 0)
    transactions = multi = 0
    committed = 0
    try:
        with connect(dsn, autocommit=True) as conn:
            # Each transaction commits on its own; not waiting for each WAL flush keeps
            # thousands of them fast (a crash could lose the last few, never half of one).
            conn.execute("SET synchronous_commit = off")
            sim, sampled, total = _prepare(conn, changes, seed)
            first_day = sim.day
            last_report = time.monotonic()
            with conn.pipeline() as pipeline:
                for tx in sim.transactions(changes):
                    conn.execute("BEGIN")
                    for change in tx:
                        conn.execute(change.query, change.params)
                        counts[change.kind] += 1
                    conn.execute("COMMIT")
                    transactions += 1
                    multi += len(tx) > 1
                    if transactions % SYNC_EVERY == 0:
                        pipeline.sync()
                        committed = transactions
                        if progress is not None and time.monotonic() - last_report > 5:
                            last_report = time.monotonic()
                            rate = sum(counts.values()) / (last_report - started)
                            print(
                                f"simulate: {sum(counts.values()):,} of {changes:,} changes"
                                f" ({rate:,.0f}/s)",
                                file=progress,
                                flush=True,
                            )
            committed = transactions
    except psycopg.errors.UndefinedTable as exc:
        raise CliError(
            f"the source tables are missing in {describe(dsn)}: "
            f"run `b2bdwh migrate --target oltp` first ({str(exc).strip()})"
        ) from exc
    except psycopg.Error as exc:
        raise CliError(
            f"simulating failed in {describe(dsn)} after at least {committed:,} committed "
            f"transactions: {str(exc).strip()}"
        ) from exc
    return Summary(
        changes=counts,
        transactions=transactions,
        multi_transactions=multi,
        first_day=first_day,
        last_day=sim.day,
        seconds=time.monotonic() - started,
        sampled_deals=sampled,
        total_deals=total,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--changes",
        type=int,
        required=True,
        metavar="K",
        help="how many row changes to apply (inserts, updates, deletes)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"random seed: the same seed on the same source gives the same changes "
        f"(default {DEFAULT_SEED})",
    )


def run(args: argparse.Namespace) -> int:
    summary = simulate(settings.oltp_dsn(), args.changes, args.seed, progress=sys.stderr)
    print(summary.text())
    return 0
