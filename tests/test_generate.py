"""`b2bdwh generate`: determinism, the shape of the data, scale, all-or-nothing, the CLI.

All against a real migrated source database (the module's `oltp_dsn`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from psycopg import conninfo

import dbtools
from b2bdwh import generate, source
from b2bdwh.db import CliError

EXPECTED_PRODUCTS = [
    (1, "GTX Basic", "GTX", Decimal(550)),
    (2, "GTX Pro", "GTX", Decimal(4821)),
    (3, "MG Special", "MG", Decimal(55)),
    (4, "MG Advanced", "MG", Decimal(3393)),
    (5, "GTX Plus Pro", "GTX", Decimal(5482)),
    (6, "GTX Plus Basic", "GTX", Decimal(1096)),
    (7, "GTK 500", "GTK", Decimal(26768)),
]


query, scalar, fingerprint = dbtools.query, dbtools.scalar, dbtools.source_fingerprint


def catalog(dsn: str) -> list[tuple]:
    """Constraints and indexes of the source tables, with their definitions and comments."""
    return query(
        dsn,
        """
        SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid),
               obj_description(oid, 'pg_constraint')
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index', indrelid::regclass::text, indexrelid::regclass::text,
               pg_get_indexdef(indexrelid), obj_description(indexrelid, 'pg_class')
        FROM pg_index WHERE indrelid::regclass::text IN
            ('accounts', 'products', 'sales_agents', 'sales_pipeline')
        ORDER BY 1, 2, 3
        """,
    )


@pytest.fixture(scope="module", autouse=True)
def migrated_catalog(oltp_dsn: str) -> list[tuple]:
    """The constraints and indexes as the migrations made them, before any generate."""
    return catalog(oltp_dsn)


def test_same_seed_same_contents_and_another_seed_differs(oltp_dsn: str) -> None:
    generate.generate(oltp_dsn, 0.3, 5)
    first = fingerprint(oltp_dsn)
    generate.generate(oltp_dsn, 0.3, 6)
    other = fingerprint(oltp_dsn)
    generate.generate(oltp_dsn, 0.3, 5)
    again = fingerprint(oltp_dsn)
    assert again == first
    assert first["sales_pipeline"][0] == 2640
    for table in ("accounts", "sales_agents", "sales_pipeline"):
        assert other[table] != first[table], table
    assert other["products"] == first["products"]  # the catalogue is fixed


def test_rows_do_not_depend_on_how_they_are_cut() -> None:
    plan = generate.make_plan(1.2, 9)
    whole = list(generate.pipeline_lines(plan))
    assert len(whole) == 10_560
    cuts = [0, 1, 4095, 4096, 4097, 7000, 8192, 10_000, 10_560]
    pieces = [
        line
        for start, stop in itertools.pairwise(cuts)
        for line in generate.pipeline_lines(plan, start, stop)
    ]
    assert pieces == whole
    assert generate.opportunity_id(plan, 4097) == whole[4097][:8]
    # A smaller data set with the same seed starts with the same ids.
    small = generate.make_plan(0.5, 9)
    assert [line[:8] for line in generate.pipeline_lines(small, 0, 50)] == [
        line[:8] for line in whole[:50]
    ]


def test_ids_are_unique_codes_over_the_whole_id_space() -> None:
    plan = generate.make_plan(1, 3)
    ids = [generate.opportunity_id(plan, i) for i in range(200_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-Z]{8}", i) for i in ids[:1000])
    # Spread over the space, not sequential: first characters vary widely.
    assert len({i[0] for i in ids[:1000]}) == 36
    # The permutation is a bijection near the end of the space as well.
    top = [generate.opportunity_id(plan, generate.ID_SPACE - 1 - i) for i in range(50_000)]
    assert len(set(top) | set(ids)) == len(top) + len(ids)


def test_years_spread_the_dates_and_change_nothing_else() -> None:
    default = list(generate.pipeline_lines(generate.make_plan(2, 3)))
    assert list(generate.pipeline_lines(generate.make_plan(2, 3, None))) == default
    plan = generate.make_plan(2, 3, 10)
    assert (plan.first_day, plan.span_days) == (date(2008, 1, 20), 3653)
    spread = list(generate.pipeline_lines(plan))
    assert len(spread) == len(default) == 17_600
    per_year: dict[int, int] = {}
    for old, new in zip(default, spread, strict=True):
        a, b = old.rstrip("\n").split("\t"), new.rstrip("\n").split("\t")
        # The same deals (ids, agents, products, accounts, stages, values): only dates move.
        assert a[:5] + a[7:] == b[:5] + b[7:], (old, new)
        stage, engage, close = b[4], b[5], b[6]
        if stage in ("Won", "Lost"):
            engaged, closed = date.fromisoformat(engage), date.fromisoformat(close)
            assert plan.first_day <= engaged < closed <= generate.LAST_DAY
            assert (closed - engaged).days == (
                date.fromisoformat(a[6]) - date.fromisoformat(a[5])
            ).days  # the same time to close
            per_year[engaged.year] = per_year.get(engaged.year, 0) + 1
        elif stage == "Engaging":  # open deals stay recent
            assert (generate.LAST_DAY - date.fromisoformat(engage)).days < 366
        else:
            assert engage == close == "\\N"
    # Every whole year engages about as many deals that closed (the same shape).
    whole = [per_year[y] for y in range(2009, 2017)]
    mean = sum(whole) / len(whole)
    assert all(abs(n - mean) < 0.1 * mean for n in whole), per_year
    assert set(per_year) == set(range(2008, 2019))


@pytest.mark.parametrize("years", [0, -2, generate.MAX_YEARS + 1, 1.5, True])
def test_bad_years_are_refused(years: object) -> None:
    with pytest.raises(CliError, match="years must be a whole number from 1 to 25"):
        generate.make_plan(1, 1, years)  # type: ignore[arg-type]


def test_company_names_are_distinct() -> None:
    combos = len(generate.NAME_PREFIXES) * len(generate.NAME_ROOTS) * len(generate.NAME_SUFFIXES)
    names = {generate.company_name(i) for i in range(combos + 100)}
    assert len(names) == combos + 100


def test_shape_at_scale_1(oltp_dsn: str, migrated_catalog: list[tuple]) -> None:
    summary = generate.generate(oltp_dsn, 1, 1)
    dsn = oltp_dsn
    assert summary.rows == {
        "accounts": 85,
        "products": 7,
        "sales_agents": 35,
        "sales_pipeline": 8800,
    }
    assert source_counts(dsn) == summary.rows
    assert query(dsn, "SELECT * FROM products ORDER BY product_id") == EXPECTED_PRODUCTS

    # Stages.
    stages = dict(query(dsn, "SELECT deal_stage, count(*) FROM sales_pipeline GROUP BY 1"))
    assert set(stages) == {"Won", "Lost", "Engaging", "Prospecting"}
    for stage, share in (("Won", 48), ("Lost", 28), ("Engaging", 18), ("Prospecting", 6)):
        assert abs(100 * stages[stage] / 8800 - share) < 2.5, (stage, stages)
    assert summary.stages == stages

    # The rules of a deal's life.
    def count(where: str) -> int:
        return int(scalar(dsn, f"SELECT count(*) FROM sales_pipeline WHERE {where}"))

    assert count("deal_stage = 'Prospecting' AND engage_date IS NOT NULL") == 0
    assert count("deal_stage <> 'Prospecting' AND engage_date IS NULL") == 0
    assert count("deal_stage IN ('Prospecting', 'Engaging') AND close_date IS NOT NULL") == 0
    assert count("deal_stage IN ('Prospecting', 'Engaging') AND close_value IS NOT NULL") == 0
    assert (
        count("deal_stage IN ('Won', 'Lost') AND (close_date IS NULL OR close_value IS NULL)") == 0
    )
    assert count("deal_stage = 'Lost' AND close_value <> 0") == 0
    assert count("close_date < engage_date") == 0
    assert count("close_date - engage_date NOT BETWEEN 1 AND 140") == 0
    no_account = count("account_id IS NULL")
    assert count("account_id IS NULL AND deal_stage IN ('Won', 'Lost')") == 0
    assert abs(no_account / 8800 - 1 / 6) < 0.02, no_account
    assert count("opportunity_id !~ '^[0-9A-Z]{8}$'") == 0

    # Won values near the list price.
    low, high, mean = query(
        dsn,
        """
        SELECT min(close_value / sales_price), max(close_value / sales_price),
               avg(close_value / sales_price)
        FROM sales_pipeline JOIN products USING (product_id) WHERE deal_stage = 'Won'
        """,
    )[0]
    assert Decimal("0.70") <= low < Decimal("0.80")
    assert Decimal("1.10") < high <= Decimal("1.16")
    assert abs(mean - Decimal("0.967")) < Decimal("0.02")
    assert count("deal_stage = 'Won' AND close_value <> round(close_value)") == 0

    # Fifteen months of dates.
    first, last = query(
        dsn,
        "SELECT min(engage_date), greatest(max(engage_date), max(close_date)) FROM sales_pipeline",
    )[0]
    assert first == date(2016, 10, 20)
    months = (last.year - first.year) * 12 + last.month - first.month
    assert 14 <= months <= 15, last
    assert (summary.first_engage, summary.last_close) == (first, last)

    # Uneven popularity and workload, as in real data.
    per_product = [
        n for (n,) in query(dsn, "SELECT count(*) FROM sales_pipeline GROUP BY product_id")
    ]
    assert len(per_product) == 7 and max(per_product) > 20 * min(per_product)
    per_agent = dict(query(dsn, "SELECT sales_agent_id, count(*) FROM sales_pipeline GROUP BY 1"))
    assert 25 <= len(per_agent) < 35  # some recent hires have no deals yet
    assert max(per_agent.values()) > 2 * min(per_agent.values())
    assert summary.won_value == scalar(
        dsn, "SELECT sum(close_value) FROM sales_pipeline WHERE deal_stage = 'Won'"
    )

    # Products, agents, managers, offices.
    assert scalar(dsn, "SELECT count(DISTINCT series) FROM products") == 3
    assert scalar(dsn, "SELECT count(DISTINCT manager_name) FROM sales_agents") == 6
    assert scalar(dsn, "SELECT array_agg(DISTINCT regional_office) FROM sales_agents") == [
        "Central",
        "East",
        "West",
    ]
    assert (
        scalar(
            dsn,
            "SELECT max(n) FROM (SELECT count(DISTINCT regional_office) n FROM sales_agents"
            " GROUP BY manager_name) m",
        )
        == 1
    )
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM sales_agents a JOIN sales_agents m"
            " ON a.sales_agent_name = m.manager_name",
        )
        == 0
    )

    # Accounts.
    a = query(
        dsn,
        """
        SELECT count(DISTINCT account_name), count(DISTINCT sector), min(year_established),
               max(year_established), min(revenue), max(revenue), max(scale(revenue)),
               min(employees), count(parent_account_id), count(DISTINCT office_location)
        FROM accounts
        """,
    )[0]
    names, sectors, first_year, last_year, min_rev, max_rev, rev_scale, min_emp, parents, places = a
    assert names == 85
    assert 6 <= sectors <= 10
    assert first_year >= 1979 and last_year <= 2017
    assert Decimal("4.5") <= min_rev and max_rev <= Decimal(11_700) and rev_scale == 2
    assert min_emp >= 9
    assert 5 <= parents <= 22  # about 15%
    assert places >= 2
    assert count_accounts(dsn, "parent_account_id = account_id") == 0
    # Parents are top-level companies: no chains, hence no cycles.
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM accounts c JOIN accounts p"
            " ON c.parent_account_id = p.account_id WHERE p.parent_account_id IS NOT NULL",
        )
        == 0
    )

    # Keys, indexes and comments are exactly those of the migrations.
    assert catalog(dsn) == migrated_catalog
    # Identities continue above the loaded keys.
    with psycopg.connect(dsn) as conn:
        new_id = conn.execute(
            "INSERT INTO accounts (account_name) VALUES ('zz test') RETURNING account_id"
        ).fetchone()
        conn.rollback()
    assert new_id == (86,)

    text = summary.text()
    assert "sales_pipeline" in text and "8,800" in text and "Prospecting" in text
    assert f"{summary.won_value:,}" in text


def source_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return source.counts(conn)


def count_accounts(dsn: str, where: str) -> int:
    return int(scalar(dsn, f"SELECT count(*) FROM accounts WHERE {where}"))


@pytest.mark.parametrize(
    ("scale", "accounts", "opportunities"),
    [(2, 170, 17_600), (0.5, 42, 4_400), (0.01, 1, 88), (0.0001, 1, 1)],
)
def test_scale_multiplies_accounts_and_opportunities(
    oltp_dsn: str, scale: float, accounts: int, opportunities: int
) -> None:
    summary = generate.generate(oltp_dsn, scale, 4)
    expected = {
        "accounts": accounts,
        "products": 7,
        "sales_agents": 35,
        "sales_pipeline": opportunities,
    }
    assert source_counts(oltp_dsn) == expected == summary.rows
    assert count_accounts(oltp_dsn, "parent_account_id IS NOT NULL") <= accounts * 0.3
    assert scalar(oltp_dsn, "SELECT count(DISTINCT opportunity_id) FROM sales_pipeline") == (
        opportunities
    )


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, generate.MAX_SCALE * 2])
def test_bad_scale_changes_nothing(oltp_dsn: str, scale: float) -> None:
    generate.generate(oltp_dsn, 0.1, 8)
    before = fingerprint(oltp_dsn)
    with pytest.raises(CliError, match="scale"):
        generate.generate(oltp_dsn, scale, 8)
    assert fingerprint(oltp_dsn) == before


def test_failure_mid_load_leaves_previous_contents(
    oltp_dsn: str, migrated_catalog: list[tuple]
) -> None:
    generate.generate(oltp_dsn, 0.2, 2)
    before = fingerprint(oltp_dsn)
    # Row 5,000 of 8,800 is unreadable: the COPY of the pipeline fails part-way,
    # after the source was emptied and three tables were refilled.
    with pytest.raises(CliError, match="left as it was"):
        generate.generate(oltp_dsn, 1, 3, invalid_row_at=5_000)
    assert fingerprint(oltp_dsn) == before
    assert catalog(oltp_dsn) == migrated_catalog


def test_locked_source_times_out_and_changes_nothing(oltp_dsn: str) -> None:
    generate.generate(oltp_dsn, 0.2, 2)
    before = fingerprint(oltp_dsn)
    impatient = conninfo.make_conninfo(oltp_dsn, options="-c lock_timeout=300")
    with psycopg.connect(oltp_dsn) as reader:
        reader.execute("SELECT count(*) FROM sales_pipeline").fetchone()  # holds a lock
        with pytest.raises(CliError, match="in use"):
            generate.generate(impatient, 1, 3)
        reader.rollback()
    assert fingerprint(oltp_dsn) == before


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "B2B_OLTP_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "b2bdwh", "generate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli(oltp_dsn: str) -> None:
    proc = run_cli(oltp_dsn, "--scale", "0.2", "--seed", "9")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "scale 0.2, seed 9" in out
    assert re.search(r"sales_pipeline\s+1,760\b", out), out
    assert re.search(r"accounts\s+17\b", out), out
    assert re.search(r"Won\s+[\d,]+\s+\d+\.\d%", out), out
    assert "Total won value:" in out and "Elapsed:" in out
    assert re.search(r"Engage dates 2016-10-20 \.\. 20\d\d-\d\d-\d\d", out), out
    from_cli = fingerprint(oltp_dsn)
    generate.generate(oltp_dsn, 0.2, 9)
    assert fingerprint(oltp_dsn) == from_cli  # the command and the function agree

    spread = run_cli(oltp_dsn, "--scale", "0.2", "--seed", "9", "--years", "10")
    assert spread.returncode == 0, spread.stderr
    assert "scale 0.2, seed 9, over 10 years" in spread.stdout
    assert re.search(r"Engage dates 2008-0\d-\d\d \.\. 2018-01-\d\d", spread.stdout), spread.stdout
    assert scalar(oltp_dsn, "SELECT min(engage_date) FROM sales_pipeline") >= date(2008, 1, 20)
    bad_years = run_cli(oltp_dsn, "--scale", "0.2", "--years", "30")
    assert bad_years.returncode == 1
    assert "b2bdwh generate: years must be a whole number from 1 to 25" in bad_years.stderr
    generate.generate(oltp_dsn, 0.2, 9)

    bad = run_cli(oltp_dsn, "--scale", "0")
    assert bad.returncode == 1
    assert "b2bdwh generate: scale must be a number above 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert fingerprint(oltp_dsn) == from_cli

    unreachable = run_cli("dbname=b2bdwh_no_such_database_x", "--scale", "0.1")
    assert unreachable.returncode == 1
    assert "cannot connect" in unreachable.stderr
