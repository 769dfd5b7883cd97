"""`b2bdwh simulate`: K changes, determinism, the rules of a deal's life, odd sources, the CLI.

Changes are counted by a row-level audit trigger that this module installs on
the four source tables: one audit row per row inserted, updated or deleted,
with the transaction that did it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta

import psycopg
import pytest

import dbtools
from b2bdwh import generate, simulate, source
from b2bdwh.db import CliError

AUDIT = """
CREATE TABLE public.test_audit (
    n bigserial PRIMARY KEY,
    txid bigint NOT NULL DEFAULT txid_current(),
    tbl text NOT NULL,
    op text NOT NULL,
    old jsonb,
    new jsonb
);
CREATE FUNCTION public.test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.test_audit (tbl, op, old, new)
    VALUES (TG_TABLE_NAME, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END $$;
"""

# (table, operation) of each kind of change.
KIND_ROWS = {
    "create": ("sales_pipeline", "INSERT"),
    "delete": ("sales_pipeline", "DELETE"),
    "account": ("accounts", "UPDATE"),
    "agent": ("sales_agents", "UPDATE"),
    "product": ("products", "UPDATE"),
}


query, scalar, fingerprint = dbtools.query, dbtools.scalar, dbtools.source_fingerprint


@pytest.fixture(scope="module", autouse=True)
def audited(oltp_dsn: str) -> None:
    with psycopg.connect(oltp_dsn, autocommit=True) as conn:
        conn.execute(AUDIT)
        for table in source.SOURCE_TABLES:
            conn.execute(
                f"CREATE TRIGGER test_audit AFTER INSERT OR UPDATE OR DELETE ON public.{table}"
                " FOR EACH ROW EXECUTE FUNCTION public.test_audit()"
            )


def fresh_source(dsn: str, scale: float = 0.2, seed: int = 3) -> None:
    """A generated source, and an empty audit log."""
    generate.generate(dsn, scale, seed)
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE public.test_audit")


def audit(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT txid, tbl, op, old, new FROM public.test_audit ORDER BY n")


def check_deal_rules(dsn: str) -> None:
    """The rules generate keeps must still hold after any simulation."""

    def count(where: str) -> int:
        return int(scalar(dsn, f"SELECT count(*) FROM sales_pipeline WHERE {where}"))

    assert count("deal_stage = 'Prospecting' AND engage_date IS NOT NULL") == 0
    assert count("deal_stage <> 'Prospecting' AND engage_date IS NULL") == 0
    assert count("deal_stage IN ('Prospecting', 'Engaging') AND close_date IS NOT NULL") == 0
    assert count("deal_stage IN ('Prospecting', 'Engaging') AND close_value IS NOT NULL") == 0
    assert count("deal_stage IN ('Won', 'Lost') AND close_date IS NULL") == 0
    assert count("deal_stage = 'Lost' AND close_value IS DISTINCT FROM 0") == 0
    assert count("deal_stage = 'Won' AND NOT close_value > 0") == 0
    assert count("close_date < engage_date") == 0
    assert count("account_id IS NULL AND deal_stage IN ('Won', 'Lost')") == 0
    assert count("opportunity_id !~ '^[0-9A-Z]{8}$'") == 0
    assert count("deal_stage NOT IN ('Prospecting', 'Engaging', 'Won', 'Lost')") == 0
    # Won values stay near the list price, even after price changes.
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM sales_pipeline JOIN products USING (product_id)"
            " WHERE deal_stage = 'Won'"
            " AND close_value / sales_price NOT BETWEEN 0.5 AND 1.7",
        )
        == 0
    )
    # A manager leads from one office.
    assert (
        scalar(
            dsn,
            "SELECT coalesce(max(n), 1) FROM (SELECT count(DISTINCT regional_office) n"
            " FROM sales_agents GROUP BY manager_name) m",
        )
        == 1
    )


def test_k_changes_are_k_row_changes(oltp_dsn: str) -> None:
    fresh_source(oltp_dsn)
    deals_before = scalar(oltp_dsn, "SELECT count(*) FROM sales_pipeline")
    summary = simulate.simulate(oltp_dsn, 500, 1)
    rows = audit(oltp_dsn)

    assert summary.total == 500
    assert len(rows) == 500
    # Every update changes its row.
    assert [r for r in rows if r[2] == "UPDATE" and r[3] == r[4]] == []
    # One transaction per planned transaction, some with several changes.
    per_tx = Counter(r[0] for r in rows)
    assert len(per_tx) == summary.transactions
    assert sum(n > 1 for n in per_tx.values()) == summary.multi_transactions > 0
    assert summary.transactions < 500
    # The kinds reported are the kinds applied.
    by_row = Counter((r[1], r[2]) for r in rows)
    for kind, key in KIND_ROWS.items():
        assert by_row[key] == summary.changes[kind], kind
    assert (
        by_row["sales_pipeline", "UPDATE"]
        == summary.changes["advance"] + summary.changes["correct"]
    )
    assert all(summary.changes[kind] > 0 for kind in simulate.KINDS), summary.changes
    assert summary.changes["advance"] > summary.changes["agent"] > summary.changes["product"]
    # At least one transaction changed a deal twice, and one changed a product's price twice.
    touched = Counter(
        (r[0], r[1], (r[4] or r[3]).get("opportunity_id") or (r[4] or r[3]).get("product_id"))
        for r in rows
        if r[1] in ("sales_pipeline", "products")
    )
    twice = {key[1] for key, n in touched.items() if n >= 2}
    assert twice == {"sales_pipeline", "products"}
    # The effect, seen from the tables: deals created minus deals deleted.
    deals_after = scalar(oltp_dsn, "SELECT count(*) FROM sales_pipeline")
    assert deals_after == deals_before + summary.changes["create"] - summary.changes["delete"]
    check_deal_rules(oltp_dsn)


def test_stage_advances_follow_the_rules(oltp_dsn: str) -> None:
    fresh_source(oltp_dsn)
    start_day = scalar(oltp_dsn, "SELECT max(close_date) FROM sales_pipeline")
    summary = simulate.simulate(oltp_dsn, 2_000, 5)
    moves = Counter()
    for _, table, op, old, new in audit(oltp_dsn):
        if table != "sales_pipeline" or op != "UPDATE" or old["deal_stage"] == new["deal_stage"]:
            continue
        moves[old["deal_stage"], new["deal_stage"]] += 1
        if new["deal_stage"] == "Engaging":
            assert old["engage_date"] is None and new["engage_date"] is not None
        if new["deal_stage"] in ("Won", "Lost"):
            assert new["close_date"] >= new["engage_date"]
            assert new["account_id"] is not None
    assert set(moves) == {
        ("Prospecting", "Engaging"),
        ("Engaging", "Won"),
        ("Engaging", "Lost"),
    }
    assert moves["Engaging", "Won"] > moves["Engaging", "Lost"]
    check_deal_rules(oltp_dsn)
    # New dates stay around the last date of the source: months, not years, later.
    last = scalar(
        oltp_dsn, "SELECT greatest(max(engage_date), max(close_date)) FROM sales_pipeline"
    )
    assert start_day <= last <= start_day + timedelta(days=120)
    assert summary.first_day == start_day and summary.last_day >= last
    assert scalar(oltp_dsn, "SELECT min(engage_date) FROM sales_pipeline") >= date(2016, 10, 20)


def test_same_seed_same_changes(oltp_dsn: str) -> None:
    # At scale 1 the 8,800 deals are more than the sample for 300 changes.
    results = []
    for seed in (11, 11, 12):
        fresh_source(oltp_dsn, 1, 3)
        simulate.simulate(oltp_dsn, 300, seed)
        results.append(fingerprint(oltp_dsn))
    assert results[0] == results[1]
    assert results[0]["sales_pipeline"] != results[2]["sales_pipeline"]
    fresh_source(oltp_dsn, 1, 3)
    assert fingerprint(oltp_dsn)["sales_pipeline"] != results[0]["sales_pipeline"]


def test_empty_pipeline_gets_new_deals(oltp_dsn: str) -> None:
    fresh_source(oltp_dsn)
    with psycopg.connect(oltp_dsn) as conn:
        conn.execute("DELETE FROM sales_pipeline")
        conn.execute("TRUNCATE public.test_audit")
    summary = simulate.simulate(oltp_dsn, 300, 2)
    assert len(audit(oltp_dsn)) == 300 == summary.total
    assert summary.changes["create"] > 0
    deals = scalar(oltp_dsn, "SELECT count(*) FROM sales_pipeline")
    assert deals == summary.changes["create"] - summary.changes["delete"] > 0
    check_deal_rules(oltp_dsn)
    # With no dates in the source, the clock starts where generated data ends.
    assert summary.first_day == generate.LAST_DAY


def test_odd_imported_source(oltp_dsn: str) -> None:
    """A source as an import may leave it: few rows, NULLs, free-text stages, a lone manager."""
    fresh_source(oltp_dsn)
    with psycopg.connect(oltp_dsn) as conn:
        source.truncate_source(conn)
        conn.execute(
            """
            INSERT INTO products VALUES (1, 'Widget', NULL, NULL), (2, 'Gadget', 'G', 10);
            INSERT INTO sales_agents VALUES (1, 'Ann Example', 'Boss One', NULL);
            INSERT INTO accounts (account_id, account_name) VALUES (1, 'Only Customer');
            INSERT INTO sales_pipeline VALUES
                ('ODD00001', 1, 1, NULL, 'Engaging', NULL, NULL, NULL),
                ('ODD00002', 1, 2, 1, 'Closed Won', '2017-01-01', '2017-02-01', 12),
                ('ODD00003', 1, 2, 1, 'Won', '2017-01-01', '2017-03-01', NULL),
                ('ODD00004', 1, 2, NULL, 'Engaging', '9999-12-31', NULL, NULL),
                ('ODD00005', 1, 1, 1, 'Lost', '2017-01-01', '0001-01-01', 0);
            TRUNCATE public.test_audit;
            """
        )
    summary = simulate.simulate(oltp_dsn, 200, 4)
    rows = audit(oltp_dsn)
    assert len(rows) == 200 == summary.total
    assert [r for r in rows if r[2] == "UPDATE" and r[3] == r[4]] == []
    # The clock starts at the last plausible date, not at 9999-12-31, and every date
    # written stays near it.
    assert summary.first_day == date(2017, 3, 1)
    written = [
        date.fromisoformat(r[4][column])
        for r in rows
        if r[1] == "sales_pipeline" and r[4] is not None
        for column in ("engage_date", "close_date")
        if r[4][column] is not None and r[4][column] != (r[3] or {}).get(column)
    ]
    assert written and all(date(2016, 11, 1) <= d <= date(2017, 9, 1) for d in written)
    assert (
        scalar(
            oltp_dsn,
            "SELECT count(*) FROM sales_pipeline WHERE close_date < engage_date"
            " AND left(opportunity_id, 3) <> 'ODD'",
        )
        == 0
    )
    assert (
        scalar(
            oltp_dsn,
            "SELECT count(*) FROM sales_pipeline WHERE account_id IS NULL"
            " AND deal_stage IN ('Won', 'Lost')",
        )
        == 0
    )


def test_failing_change_stops_the_run_after_committed_transactions(oltp_dsn: str) -> None:
    fresh_source(oltp_dsn)
    with psycopg.connect(oltp_dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION public.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'test: prices are frozen'; END $$;
            CREATE TRIGGER test_refuse BEFORE UPDATE ON public.products
                FOR EACH ROW EXECUTE FUNCTION public.test_refuse();
            """
        )
    try:
        # From 200 changes on, one product change is certain; it fails here.
        with pytest.raises(CliError, match="prices are frozen") as failure:
            simulate.simulate(oltp_dsn, 2_000, 3)
    finally:
        with psycopg.connect(oltp_dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_refuse ON public.products")
    assert "committed transactions" in str(failure.value)
    rows = audit(oltp_dsn)
    # What came before the failure is committed, a transaction at a time; the
    # failing transaction and everything after it are not.
    assert 0 < len(rows) < 2_000
    assert not [r for r in rows if r[1] == "products"]
    assert scalar(oltp_dsn, "SELECT count(*) FROM sales_pipeline") > 0
    check_deal_rules(oltp_dsn)


def test_source_without_agents_is_refused(oltp_dsn: str) -> None:
    with psycopg.connect(oltp_dsn) as conn:
        source.truncate_source(conn)
    with pytest.raises(CliError, match="no sales agents or no products"):
        simulate.simulate(oltp_dsn, 10, 1)
    with pytest.raises(CliError, match="whole number"):
        simulate.simulate(oltp_dsn, -1, 1)


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "B2B_OLTP_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "b2bdwh", "simulate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli(oltp_dsn: str) -> None:
    fresh_source(oltp_dsn)
    proc = run_cli(oltp_dsn, "--changes", "250", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Simulated 250 changes in \d+ committed transactions", proc.stdout)
    for kind in simulate.KINDS:
        assert re.search(rf"^  {kind}\s+[\d,]+\s+\d+\.\d%$", proc.stdout, re.M), kind
    assert "Elapsed:" in proc.stdout
    assert len(audit(oltp_dsn)) == 250
    from_cli = fingerprint(oltp_dsn)
    fresh_source(oltp_dsn)
    simulate.simulate(oltp_dsn, 250, 7)
    assert fingerprint(oltp_dsn) == from_cli  # the command and the function agree

    bad = run_cli(oltp_dsn, "--changes", "-5")
    assert bad.returncode == 1
    assert "b2bdwh simulate: the number of changes must be" in bad.stderr
    missing = run_cli(oltp_dsn)
    assert missing.returncode == 2 and "--changes" in missing.stderr
