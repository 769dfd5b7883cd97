"""`b2bdwh generate`: a deterministic synthetic CRM, shaped like a real public export.

The shape at scale 1 is that of the "CRM Sales Opportunities" data set
(Maven Analytics): 85 accounts, 7 products in 3 series, 35 sales agents under
6 managers in 3 offices, and 8,800 opportunities over 15 months, of which
about 48% are Won, 28% Lost, 18% Engaging and 6% Prospecting. Scale N
multiplies accounts and opportunities; products and agents stay fixed.

Rules the data keeps:
- Prospecting deals have no engage date; open deals (Prospecting, Engaging)
  have no close date and no close value.
- Only open deals lack an account: every Prospecting deal and about 59% of
  the Engaging ones, so that about 1 row in 6 has no account.
- Lost deals close at 0; Won deals close at the list price times a factor
  between 0.75 and 1.15 (triangular, mode 1.0), in whole units.
- Closed deals close 1 to 140 days after engaging, all within the 15 months
  from 2016-10-20; with --years N, within the N years up to the same last day
  (2018-01-19), spread evenly, so that every year has the same shape (the
  open deals stay recent: they engaged in the last months).

The same scale and seed give the same contents, byte for byte. Opportunities
are drawn in fixed blocks of BLOCK_ROWS rows, each from its own random
stream, so the result does not depend on how the rows are sent. The source is
replaced all or nothing, in one transaction (see b2bdwh.source).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TextIO

import psycopg
from psycopg import sql

from b2bdwh import settings, source
from b2bdwh.db import CliError, connect, describe

HELP = "replace the CRM source with a deterministic synthetic data set (--scale, --seed, --years)"

DEFAULT_SEED = 1
MAX_SCALE = 100_000  # 880 million opportunities: far beyond any use, within the id space
BASE_ACCOUNTS = 85
BASE_OPPORTUNITIES = 8_800
BLOCK_ROWS = 4_096  # rows per random stream: part of the data's definition, never tune it
PROGRESS_EVERY = 1_000_000  # a progress line per million opportunities
PROGRESS_FROM = 500_000  # and lines about each phase from this size on (a few seconds)

FIRST_DAY = date(2016, 10, 20)
LAST_DAY = date(2018, 1, 19)  # 15 months, both ends included
SPAN_DAYS = (LAST_DAY - FIRST_DAY).days + 1
# --years N: the N years up to LAST_DAY instead. At most MAX_YEARS: the warehouse's
# calendar starts in 1990 by default (etl.config date_min), and older dates would
# all be its Unknown date.
MAX_YEARS = 25

# (name, series, list price) in product_id order, and how often each is sold.
PRODUCTS: tuple[tuple[str, str, int], ...] = (
    ("GTX Basic", "GTX", 550),
    ("GTX Pro", "GTX", 4821),
    ("MG Special", "MG", 55),
    ("MG Advanced", "MG", 3393),
    ("GTX Plus Pro", "GTX", 5482),
    ("GTX Plus Basic", "GTX", 1096),
    ("GTK 500", "GTK", 26768),
)
PRODUCT_WEIGHTS = (1866, 1480, 1651, 1412, 968, 1383, 40)

STAGES = ("Won", "Lost", "Engaging", "Prospecting")
# Out of 1024: 48.0%, 28.0%, 18.0%, 6.0%.
STAGE_SLOTS = (492, 287, 184, 61)
# Out of 256, the Engaging deals without an account: 59.4%, so that with all
# Prospecting deals about 1/6 of the rows have none.
ENGAGING_NO_ACCOUNT = 152
DELAY_MAX = 140
WON_FACTOR = (0.75, 1.0, 1.15)  # low, mode, high
ENGAGING_AGE_MEAN = 45  # days since engaging of a deal still in progress

OFFICES = ("Central", "East", "West")
AGENTS = 35
AGENTS_WITHOUT_DEALS = 5  # recent hires, as in the real data
MANAGERS_PER_OFFICE = 2

SECTORS = (
    ("retail", 17),
    ("technology", 12),
    ("medical", 12),
    ("software", 7),
    ("marketing", 8),
    ("finance", 8),
    ("entertainment", 6),
    ("telecommunications", 6),
    ("services", 5),
    ("employment", 4),
)
COUNTRIES = (
    ("United States", 71),
    ("Philippines", 1),
    ("Japan", 1),
    ("Korea", 1),
    ("Jordan", 1),
    ("Kenya", 1),
    ("Norway", 1),
    ("Panama", 1),
    ("Italy", 1),
    ("Belgium", 1),
    ("Brazil", 1),
    ("China", 1),
    ("Germany", 1),
    ("Poland", 1),
    ("Romania", 1),
)
SUBSIDIARY_SHARE = 0.15
YEARS = (1979, 2017)
REVENUE_MILLIONS = (4.5, 11_700.0)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Aaliyah Adrian Agnes Alma Amara Anders Ansel Aria Arlo Astrid Beatrix Bennett Bianca "
    "Boris Bruno Callum Camille Carmen Casper Cecily Celeste Cyrus Dalia Dante Delphine "
    "Desmond Dorian Edith Elio Elise Emeric Esme Ezra Fabian Felix Fiona Flora Gideon Greta "
    "Gustav Hana Hector Helena Hugo Ida Imogen Ines Ivo Jasper Juno Kai Katya Lars Leona "
    "Linus Lorenzo Lucia Magnus Maren Marlow Mateo Mira Nadia Nico Nora Odette Orson Otto "
    "Paloma Pia Quentin Rafael Rosa Rufus Saoirse Selma Silas Soren Tamsin Theo Thea Uma "
    "Valentin Vera Wendell Wren Yara Zora"
)
LAST_NAMES = _words(
    "Abernathy Albrecht Alcott Amsel Arden Ashby Bardsley Bellamy Berglund Blackwood "
    "Brannigan Castellano Corbett Dalgaard Devereux Dunmore Eastwick Ellery Engstrom Falkner "
    "Fenwick Galloway Gilchrist Halvorsen Hargreave Holloway Ingersoll Jarrow Kessler Kincaid "
    "Lachance Lindqvist Lockhart Maddox Marchetti Merriweather Nakamura Norberg Oakley Okafor "
    "Pemberton Quillfeather Radcliffe Rasmussen Rowntree Saltonstall Sandoval Thorne "
    "Underhill Vasquez Wexler Whitlock Yardley Zellweger"
)
NAME_PREFIXES = _words(
    "Acu Aero Alpen Amber Apex Aqua Arbor Astra Aura Axi Bay Bold Bright Cedar Cinder Clear "
    "Cobalt Coral Crest Crystal Delta Drift Echo Ember Evergreen Falcon Fern Flint Frost "
    "Garnet Glacier Golden Granite Harbor Hazel Helio Horizon Indigo Iron Jade Juniper "
    "Kestrel Lumen Lunar Maple Marble Meadow Nimbus Nova Oak Onyx Opal Orbit Pinnacle Quartz "
    "Raven Ridge Sable Sierra Silver Solar Summit Tidal Vertex"
)
NAME_ROOTS = _words(
    "base beam bridge cast core craft dale dyne field flow forge gate grid haven hub key lab "
    "land light line link logic mark mill mind nest net path peak point port pulse quest "
    "scape shift side soft span sphere spring stack star stream tech tide vale view wave"
)
NAME_SUFFIXES = _words(
    "Analytics Associates Brands Capital Communications Consulting Corporation Dynamics "
    "Electronics Energy Enterprises Foods Global Group Health Holdings Inc Industries "
    "Interactive International Labs Logistics Ltd Manufacturing Media Medical Networks "
    "Partners Pharma Retail Robotics Services Software Solutions Studios Supply Systems "
    "Technologies Telecom Ventures"
)

ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ID_HALF = 36**4  # an 8-character id is two 4-character halves
ID_SPACE = ID_HALF * ID_HALF
TWO_CHARS = tuple(a + b for a in ID_ALPHABET for b in ID_ALPHABET)


# --- the plan: everything but the opportunities, and the tables to draw them ---


@dataclass
class Plan:
    """What one (scale, seed) generates: the small tables, and how to draw the pipeline."""

    scale: float
    seed: int
    years: int | None  # None: the 15 months from FIRST_DAY
    n_accounts: int
    n_opportunities: int
    accounts: list[tuple[object, ...]]
    products: list[tuple[object, ...]]
    agents: list[tuple[object, ...]]
    # Lookup tables, indexed with random bits (see _pipeline_block).
    stage_of: list[int] = field(repr=False)
    product_of: list[int] = field(repr=False)
    agent_of: list[str] = field(repr=False)
    account_of: list[str] = field(repr=False)
    account_bits: int = 0
    delay_of: list[int] = field(repr=False, default_factory=list)
    age_of: list[int] = field(repr=False, default_factory=list)
    won_value_of: list[list[str]] = field(repr=False, default_factory=list)
    dates: list[str] = field(repr=False, default_factory=list)
    id_keys: tuple[int, ...] = ()

    @property
    def first_day(self) -> date:
        return span(self.years)[0]

    @property
    def span_days(self) -> int:
        return span(self.years)[1]


def counts_for(scale: float) -> tuple[int, int]:
    """(accounts, opportunities) at a scale: rounded, and at least one account."""
    return max(1, round(BASE_ACCOUNTS * scale)), round(BASE_OPPORTUNITIES * scale)


def span(years: int | None) -> tuple[date, int]:
    """(first day, days) of the dates: the 15 months, or the `years` years up to LAST_DAY."""
    if years is None:
        return FIRST_DAY, SPAN_DAYS
    first = date(LAST_DAY.year - years, LAST_DAY.month, LAST_DAY.day) + timedelta(days=1)
    return first, (LAST_DAY - first).days + 1


def validate(scale: float, seed: int, years: int | None = None) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise CliError(f"scale must be a number, not {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
        raise CliError(f"scale must be a number above 0, not {scale!r}")
    if scale > MAX_SCALE:
        raise CliError(f"scale {scale!r} is too large: at most {MAX_SCALE}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CliError(f"seed must be an integer, not {seed!r}")
    if years is not None and (
        isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= MAX_YEARS
    ):
        raise CliError(
            f"years must be a whole number from 1 to {MAX_YEARS} (the warehouse's calendar "
            f"starts in 1990 by default), not {years!r}"
        )


def _rng(seed: int, *parts: object) -> random.Random:
    # Seeding with a str hashes it with SHA-512: stable across runs and platforms.
    return random.Random("/".join(["b2bdwh-generate", str(seed), *map(str, parts)]))


def _slots(weights: Sequence[float], size: int) -> list[int]:
    """A table of `size` entries where item i fills a share proportional to weights[i]."""
    total = float(sum(weights))
    table: list[int] = []
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        end = round(cumulative / total * size)
        table.extend([index] * (end - len(table)))
    return table


def _weighted(rng: random.Random, items: Sequence[tuple[str, int]]) -> str:
    names = [name for name, _ in items]
    return rng.choices(names, weights=[w for _, w in items])[0]


def _person_names(rng: random.Random, n: int) -> list[str]:
    picks = rng.sample(range(len(FIRST_NAMES) * len(LAST_NAMES)), n)
    return [f"{FIRST_NAMES[k // len(LAST_NAMES)]} {LAST_NAMES[k % len(LAST_NAMES)]}" for k in picks]


def company_name(index: int) -> str:
    """The index-th synthetic company name; distinct indexes give distinct names."""
    combos = len(NAME_PREFIXES) * len(NAME_ROOTS) * len(NAME_SUFFIXES)
    copy, base = divmod(index, combos)
    rest, suffix = divmod(base, len(NAME_SUFFIXES))
    prefix, root = divmod(rest, len(NAME_ROOTS))
    name = f"{NAME_PREFIXES[prefix]}{NAME_ROOTS[root]} {NAME_SUFFIXES[suffix]}"
    return name if copy == 0 else f"{name} {copy + 1}"


def _accounts(seed: int, n: int) -> tuple[list[tuple[object, ...]], list[float]]:
    """Account rows (ids 1..n) and how many deals each tends to get (relative)."""
    rng = _rng(seed, "accounts")
    combos = len(NAME_PREFIXES) * len(NAME_ROOTS) * len(NAME_SUFFIXES)
    space = combos * max(1, math.ceil(n / (combos * 0.8)))
    names = [company_name(k) for k in rng.sample(range(space), n)]
    # About 15% are subsidiaries of a few holding companies, which have no parent
    # themselves: no cycles, at most one level.
    subsidiary = [n > 1 and rng.random() < SUBSIDIARY_SHARE for _ in range(n)]
    top = [i for i in range(n) if not subsidiary[i]]
    holdings = rng.sample(top, max(1, round(len(top) * 0.08))) if top else []
    rows: list[tuple[object, ...]] = []
    weights: list[float] = []
    lo, hi = math.log(REVENUE_MILLIONS[0]), math.log(REVENUE_MILLIONS[1])
    for i in range(n):
        revenue_cents = round(math.exp(rng.uniform(lo, hi)) * 100)
        employees = max(9, round(revenue_cents / 100 * rng.uniform(1.2, 4.8)))
        parent = rng.choice(holdings) + 1 if subsidiary[i] and holdings else None
        rows.append(
            (
                i + 1,
                names[i],
                _weighted(rng, SECTORS),
                rng.randint(*YEARS),
                Decimal(revenue_cents).scaleb(-2),
                employees,
                _weighted(rng, COUNTRIES),
                parent,
            )
        )
        weights.append(0.3 + 1.7 * rng.random() ** 2)
    return rows, weights


def _agents(seed: int) -> tuple[list[tuple[object, ...]], list[float]]:
    """Agent rows (ids 1..35) and their relative workload; recent hires have none."""
    rng = _rng(seed, "agents")
    names = _person_names(rng, AGENTS + len(OFFICES) * MANAGERS_PER_OFFICE)
    managers = [
        (names[AGENTS + k], OFFICES[k // MANAGERS_PER_OFFICE])
        for k in range(len(OFFICES) * MANAGERS_PER_OFFICE)
    ]
    rows: list[tuple[object, ...]] = []
    for i in range(AGENTS):
        manager, office = managers[i % len(managers)]
        rows.append((i + 1, names[i], manager, office))
    new_hires = set(rng.sample(range(AGENTS), AGENTS_WITHOUT_DEALS))
    weights = [0.0 if i in new_hires else 1.0 + 3.4 * rng.random() ** 1.5 for i in range(AGENTS)]
    return rows, weights


def _triangular_quantile(u: float, low: float, mode: float, high: float) -> float:
    cut = (mode - low) / (high - low)
    if u < cut:
        return low + math.sqrt(u * (high - low) * (mode - low))
    return high - math.sqrt((1 - u) * (high - low) * (high - mode))


def make_plan(scale: float, seed: int, years: int | None = None) -> Plan:
    """Everything that generating at (scale, seed, years) needs, but the opportunities."""
    validate(scale, seed, years)
    first_day, span_days = span(years)
    n_accounts, n_opportunities = counts_for(scale)
    accounts, account_weights = _accounts(seed, n_accounts)
    agents, agent_weights = _agents(seed)
    products = [(i + 1, name, series, price) for i, (name, series, price) in enumerate(PRODUCTS)]

    # Accounts are drawn with 2**bits slots, at least 8 per account on average.
    account_bits = max(20, math.ceil(math.log2(n_accounts * 8)))
    account_ids = [str(i + 1) for i in range(n_accounts)]
    account_of = [account_ids[i] for i in _slots(account_weights, 1 << account_bits)]
    stage_of = _slots(STAGE_SLOTS, 1024)
    product_of = [i + 1 for i in _slots(PRODUCT_WEIGHTS, 1024)]
    agent_of = [str(i + 1) for i in _slots(agent_weights, 1024)]
    # Days from engage to close: 1..140, mean about 50 (quantiles of u**1.8).
    delay_of = [1 + int((DELAY_MAX - 1) * ((k + 1) / 1024) ** 1.8) for k in range(1024)]
    # Days since an Engaging deal engaged: exponential, capped by the span.
    age_of = [
        min(span_days - 1, int(-ENGAGING_AGE_MEAN * math.log(1 - (k + 0.5) / 1024)))
        for k in range(1024)
    ]
    won_value_of = [[]] + [
        [
            str(int(price * _triangular_quantile((k + 0.5) / 4096, *WON_FACTOR) + 0.5))
            for k in range(4096)
        ]
        for _, _, price in PRODUCTS
    ]
    dates = [(first_day + timedelta(days=d)).isoformat() for d in range(span_days)]
    id_rng = _rng(seed, "ids")
    id_keys = tuple(id_rng.randrange(1, ID_HALF) for _ in range(6))
    return Plan(
        scale=scale,
        seed=seed,
        years=years,
        n_accounts=n_accounts,
        n_opportunities=n_opportunities,
        accounts=accounts,
        products=products,
        agents=agents,
        stage_of=stage_of,
        product_of=product_of,
        agent_of=agent_of,
        account_of=account_of,
        account_bits=account_bits,
        delay_of=delay_of,
        age_of=age_of,
        won_value_of=won_value_of,
        dates=dates,
        id_keys=id_keys,
    )


def opportunity_id(plan: Plan, index: int) -> str:
    """The id of the index-th opportunity: a keyed permutation of 0..36**8-1, in base 36."""
    k1, k2, k3, k4, k5, k6 = plan.id_keys
    hi, lo = divmod(index, ID_HALF)
    hi = (hi + ((lo * k1) ^ k2) % ID_HALF) % ID_HALF
    lo = (lo + ((hi * k3) ^ k4) % ID_HALF) % ID_HALF
    hi = (hi + ((lo * k5) ^ k6) % ID_HALF) % ID_HALF
    a, b = divmod(hi, 1296)
    c, d = divmod(lo, 1296)
    return TWO_CHARS[a] + TWO_CHARS[b] + TWO_CHARS[c] + TWO_CHARS[d]


def _pipeline_block(plan: Plan, block: int) -> list[str]:
    """COPY text lines of the opportunities of one block, from that block's own stream.

    One 64-bit draw per row: bits 0-9 stage, 10-19 product, 20-29 agent, 30-39
    delay or age, 40-55 engage day, 56-63 account or not (Engaging). Closed deals
    draw once more for the account and the won value.
    """
    start = block * BLOCK_ROWS
    stop = min(start + BLOCK_ROWS, plan.n_opportunities)
    grab = _rng(plan.seed, "pipeline", block).getrandbits
    stage_of, product_of, agent_of = plan.stage_of, plan.product_of, plan.agent_of
    account_of, account_bits = plan.account_of, plan.account_bits
    delay_of, age_of, won_value_of, dates = (
        plan.delay_of,
        plan.age_of,
        plan.won_value_of,
        plan.dates,
    )
    k1, k2, k3, k4, k5, k6 = plan.id_keys
    half, span_days = ID_HALF, plan.span_days
    last_day = span_days - 1
    extra_bits = account_bits + 12
    account_mask = (1 << account_bits) - 1
    lines: list[str] = []
    add = lines.append
    for index in range(start, stop):
        # The id, inlined from opportunity_id() for speed.
        hi, lo = divmod(index, half)
        hi = (hi + ((lo * k1) ^ k2) % half) % half
        lo = (lo + ((hi * k3) ^ k4) % half) % half
        hi = (hi + ((lo * k5) ^ k6) % half) % half
        a, b = divmod(hi, 1296)
        c, d = divmod(lo, 1296)
        oid = TWO_CHARS[a] + TWO_CHARS[b] + TWO_CHARS[c] + TWO_CHARS[d]
        r = grab(64)
        stage = stage_of[r & 1023]
        product = product_of[(r >> 10) & 1023]
        agent = agent_of[(r >> 20) & 1023]
        if stage < 2:  # Won or Lost
            delay = delay_of[(r >> 30) & 1023]
            engage = (((r >> 40) & 0xFFFF) * (span_days - delay)) >> 16
            x = grab(extra_bits)
            value = won_value_of[product][x >> account_bits] if stage == 0 else "0"
            add(
                f"{oid}\t{agent}\t{product}\t{account_of[x & account_mask]}\t{STAGES[stage]}"
                f"\t{dates[engage]}\t{dates[engage + delay]}\t{value}\n"
            )
        elif stage == 2:  # Engaging
            engage = last_day - age_of[(r >> 30) & 1023]
            account = "\\N" if (r >> 56) < ENGAGING_NO_ACCOUNT else account_of[grab(account_bits)]
            add(f"{oid}\t{agent}\t{product}\t{account}\tEngaging\t{dates[engage]}\t\\N\t\\N\n")
        else:  # Prospecting
            add(f"{oid}\t{agent}\t{product}\t\\N\tProspecting\t\\N\t\\N\t\\N\n")
    return lines


def pipeline_lines(plan: Plan, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """COPY text lines of opportunities start..stop-1: the same whatever the slicing."""
    stop = plan.n_opportunities if stop is None else min(stop, plan.n_opportunities)
    if start >= stop:
        return
    for block in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
        lines = _pipeline_block(plan, block)
        first = block * BLOCK_ROWS
        yield from lines[max(start - first, 0) : stop - first]


# --- loading ---


@dataclass
class _SavedDdl:
    """Indexes and constraints of sales_pipeline taken off for the load."""

    indexes: list[tuple[str, str, str | None]]  # name, CREATE INDEX ..., comment
    keys: list[tuple[str, str, str | None]]  # name, definition, comment (primary/unique)
    foreign: list[tuple[str, str, str | None]]


PIPELINE = sql.Identifier("public", "sales_pipeline")
# For tests: an opportunity that COPY refuses (an agent id that is not a number).
INVALID_LINE = "XXXXXXXX\tnot-an-agent\t1\t\\N\tWon\t\\N\t\\N\t0\n"


def _take_off_pipeline_ddl(conn: psycopg.Connection) -> _SavedDdl:
    """Drop sales_pipeline's foreign keys and indexes (this transaction), remembering them.

    Loading millions of rows is several times faster without them; they are put
    back from their catalog definitions by _put_back_pipeline_ddl. A key that
    another table references stays.
    """
    cons = conn.execute(
        """
        SELECT c.conname, c.contype, pg_get_constraintdef(c.oid),
               obj_description(c.oid, 'pg_constraint'),
               EXISTS (SELECT 1 FROM pg_constraint r
                       WHERE r.contype = 'f' AND r.conindid = c.conindid
                         AND r.conrelid <> c.conrelid)
        FROM pg_constraint c
        WHERE c.conrelid = 'public.sales_pipeline'::regclass AND c.contype IN ('p', 'u', 'f')
        ORDER BY c.contype = 'f' DESC, c.conname
        """
    ).fetchall()
    indexes = conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid), obj_description(x.indexrelid, 'pg_class')
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = 'public.sales_pipeline'::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid
                          AND c.conrelid = x.indrelid)
        ORDER BY i.relname
        """
    ).fetchall()
    saved = _SavedDdl(indexes=[], keys=[], foreign=[])
    for name, kind, definition, comment, referenced in cons:
        if kind in ("p", "u") and referenced:
            continue
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(PIPELINE, sql.Identifier(name))
        )
        (saved.foreign if kind == "f" else saved.keys).append((name, definition, comment))
    for name, definition, comment in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", name)))
        saved.indexes.append((name, definition, comment))
    return saved


def _put_back_pipeline_ddl(
    conn: psycopg.Connection, saved: _SavedDdl, say: Callable[[str], None]
) -> None:
    """Recreate what _take_off_pipeline_ddl dropped: keys, then indexes, then foreign keys."""

    def add_constraint(name: str, definition: str, comment: str | None) -> None:
        say(f"adding constraint {name}")
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                PIPELINE, sql.Identifier(name), sql.SQL(definition)
            )
        )
        if comment is not None:
            conn.execute(
                sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    sql.Identifier(name), PIPELINE, sql.Literal(comment)
                )
            )

    for name, definition, comment in saved.keys:
        add_constraint(name, definition, comment)
    for name, definition, comment in saved.indexes:
        say(f"creating index {name}")
        conn.execute(sql.SQL(definition))
        if comment is not None:
            conn.execute(
                sql.SQL("COMMENT ON INDEX {} IS {}").format(
                    sql.Identifier("public", name), sql.Literal(comment)
                )
            )
    for name, definition, comment in saved.foreign:
        add_constraint(name, definition, comment)


@dataclass
class Summary:
    """What a generate run left in the source."""

    scale: float
    seed: int
    years: int | None
    rows: dict[str, int]
    stages: dict[str, int]
    first_engage: date | None
    last_engage: date | None
    first_close: date | None
    last_close: date | None
    won_value: Decimal
    seconds: float

    def text(self) -> str:
        total = sum(self.stages.values())
        over = f", over {self.years} years" if self.years is not None else ""
        lines = [f"Generated the CRM source at scale {self.scale:g}, seed {self.seed}{over}:"]
        width = max(len(t) for t in self.rows)
        lines += [f"  {table:<{width}}  {n:>12,}" for table, n in self.rows.items()]
        lines.append("Deals per stage:")
        for stage, n in self.stages.items():
            share = 100.0 * n / total if total else 0.0
            lines.append(f"  {stage:<{width}}  {n:>12,}  {share:5.1f}%")
        if self.first_engage or self.first_close:
            lines.append(
                f"Engage dates {self.first_engage} .. {self.last_engage}; "
                f"close dates {self.first_close} .. {self.last_close}"
            )
        lines.append(f"Total won value: {self.won_value:,}")
        lines.append(f"Elapsed: {self.seconds:.1f} s")
        return "\n".join(lines)


def _summarise(conn: psycopg.Connection, plan: Plan) -> Summary:
    rows = source.counts(conn)
    stages = dict.fromkeys(STAGES, 0)
    engage: list[date] = []
    close: list[date] = []
    won = Decimal(0)
    for stage, n, first_engage, last_engage, first_close, last_close, value in conn.execute(
        """
        SELECT deal_stage, count(*), min(engage_date), max(engage_date),
               min(close_date), max(close_date), sum(close_value)
        FROM public.sales_pipeline GROUP BY deal_stage ORDER BY count(*) DESC, deal_stage
        """
    ):
        stages[stage] = n
        engage += [d for d in (first_engage, last_engage) if d is not None]
        close += [d for d in (first_close, last_close) if d is not None]
        if stage == "Won" and value is not None:
            won = value
    return Summary(
        scale=plan.scale,
        seed=plan.seed,
        years=plan.years,
        rows=rows,
        stages=stages,
        first_engage=min(engage, default=None),
        last_engage=max(engage, default=None),
        first_close=min(close, default=None),
        last_close=max(close, default=None),
        won_value=won,
        seconds=0.0,
    )


def _load(
    conn: psycopg.Connection,
    plan: Plan,
    say: Callable[[str], None],
    *,
    invalid_row_at: int | None,
) -> None:
    started = time.monotonic()
    source.truncate_source(conn)
    source.copy_rows(conn, "products", plan.products)
    source.copy_rows(conn, "sales_agents", plan.agents)
    source.copy_rows(conn, "accounts", plan.accounts)
    saved = _take_off_pipeline_ddl(conn)
    columns = sql.SQL(", ").join(map(sql.Identifier, source.SOURCE_TABLES["sales_pipeline"]))
    # FREEZE: the table was emptied in this transaction, so rows can be written frozen.
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(PIPELINE, columns)
    written = 0
    next_report = PROGRESS_EVERY
    with conn.cursor().copy(query) as copy:
        for block in range(math.ceil(plan.n_opportunities / BLOCK_ROWS)):
            lines = _pipeline_block(plan, block)
            if invalid_row_at is not None and written <= invalid_row_at < written + len(lines):
                lines[invalid_row_at - written] = INVALID_LINE
            copy.write("".join(lines))
            written += len(lines)
            if written >= next_report:
                rate = written / max(time.monotonic() - started, 1e-9)
                say(f"{written:,} of {plan.n_opportunities:,} opportunities ({rate:,.0f} rows/s)")
                next_report += PROGRESS_EVERY
    _put_back_pipeline_ddl(conn, saved, say)
    source.resync_identities(conn)
    say("analyzing")
    for table in source.SOURCE_TABLES:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("public", table)))


def generate(
    dsn: str,
    scale: float = 1,
    seed: int = DEFAULT_SEED,
    *,
    years: int | None = None,
    progress: TextIO | None = None,
    invalid_row_at: int | None = None,
) -> Summary:
    """Replace the source's contents with the data set of (scale, seed, years), all or nothing.

    years: spread the dates over that many years up to the last day (default: the
    15 months of the real export).

    progress: where to write progress lines (default: none). invalid_row_at is
    for tests: write an unreadable opportunity at that position, so that the
    load fails part-way and the previous contents must survive.
    """
    started = time.monotonic()
    plan = make_plan(scale, seed, years)
    verbose = plan.n_opportunities >= PROGRESS_FROM

    def say(line: str) -> None:
        if progress is not None and verbose:
            print(
                f"generate: {line} [{time.monotonic() - started:.1f} s]", file=progress, flush=True
            )

    say(
        f"scale {scale:g}: {plan.n_accounts:,} accounts, {plan.n_opportunities:,} opportunities, "
        f"{plan.first_day} .. {LAST_DAY}"
    )
    try:
        with connect(dsn) as conn:
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            _load(conn, plan, say, invalid_row_at=invalid_row_at)
            summary = _summarise(conn, plan)
            say("committing")
            conn.commit()
    except psycopg.errors.UndefinedTable as exc:
        raise CliError(
            f"the source tables are missing in {describe(dsn)}: "
            f"run `b2bdwh migrate --target oltp` first ({str(exc).strip()})"
        ) from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise CliError(
            f"the source tables are in use in {describe(dsn)}; nothing was changed "
            f"({str(exc).strip()})"
        ) from exc
    except psycopg.Error as exc:
        raise CliError(
            f"generating failed in {describe(dsn)}; the source was left as it was: "
            f"{str(exc).strip()}"
        ) from exc
    summary.seconds = time.monotonic() - started
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size: 1 gives 85 accounts and 8,800 opportunities; 0.1 and 1000 work too (default 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"random seed: the same scale and seed give the same data (default {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--years",
        type=int,
        default=None,
        help=(
            "spread the deals' dates evenly over this many years up to 2018-01-19, the same "
            f"shape every year, 1 to {MAX_YEARS} (default: the 15 months of the real export)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    summary = generate(
        settings.oltp_dsn(), args.scale, args.seed, years=args.years, progress=sys.stderr
    )
    print(summary.text())
    return 0
