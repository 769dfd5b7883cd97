"""The README's SQL examples (its ```sql blocks) do what it says on a warehouse built the way
it describes (a generated source, the initial load, CRM changes, the incremental update): each
statement runs without error, in the README's order, and each SELECT returns rows unless a
comment on it says it may be empty. An example that sorts does return its rows in order."""

from __future__ import annotations

import re

import psycopg
import pytest

import dbtools
from b2bdwh import generate, simulate

README = dbtools.ROOT / "README.md"
MAY_BE_EMPTY = "(may be empty"


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def statements(block: str) -> list[tuple[str, str]]:
    """(statement, its comments) in order; a statement ends on a line whose code ends in ';',
    and the comments on its lines belong to it."""
    out: list[tuple[str, str]] = []
    code: list[str] = []
    notes: list[str] = []
    for line in block.splitlines():
        part, _, comment = line.partition("--")
        code.append(part)
        notes.append(comment)
        if part.rstrip().endswith(";"):
            out.append(("\n".join(code).strip(), " ".join(notes)))
            code, notes = [], []
    assert not "\n".join(code).strip(), f"a statement without its ';': {code}"
    return out


def test_the_readme_parser_finds_the_examples():
    blocks = sql_blocks(README.read_text())
    found = [s for block in blocks for s, _ in statements(block)]
    assert len(blocks) >= 3 and len(found) >= 10
    assert any("etl.run_initial_load" in s for s in found)
    assert any("dwh.fact_lineage" in s for s in found)
    assert statements("SELECT 1; -- one\nSELECT 2\n  FROM x;  -- (may be empty)\n") == [
        ("SELECT 1;", " one"),
        ("SELECT 2\n  FROM x;", "  (may be empty)"),
    ]


@pytest.fixture(scope="module")
def source(warehouse):
    generate.generate(warehouse.oltp_dsn, 0.05)
    return warehouse


def run_block(conn: psycopg.Connection, block: str) -> int:
    ran = 0
    for statement, comment in statements(block):
        try:
            cursor = conn.execute(statement)
        except psycopg.Error as exc:
            raise AssertionError(f"README example fails: {statement}\n{exc}") from exc
        ran += 1
        if not re.match(r"(?i)\s*(SELECT|WITH)\b", statement):
            continue
        rows = cursor.fetchall()
        if MAY_BE_EMPTY not in comment:
            assert rows, f"README example returns no rows: {statement}"
        columns = [c.name for c in cursor.description]
        order = re.search(r"(?i)ORDER BY (\w+)(?: (ASC|DESC))?;?$", statement)
        if order and order.group(1) in columns:
            values = [r[columns.index(order.group(1))] for r in rows]
            expected = sorted(values, reverse=(order.group(2) or "").upper() == "DESC")
            assert values == expected, f"not in the order it says: {statement}"
        if "dwh.v_sales_by_month" in statement and "LIMIT" not in statement:
            # months are read in order: the example must say so (a view has none)
            assert order and order.group(1) in ("month_date_key", "month_start"), (
                f"the months come in no stated order: {statement}"
            )
    return ran


def test_every_sql_example_runs_and_returns_what_it_says(source, request):
    """In the README's order, with CRM changes before its incremental update; then the
    read-only examples again after an incremental update that had nothing to apply (the
    last run wrote no fact)."""
    ran = 0
    blocks = sql_blocks(README.read_text())
    with psycopg.connect(source.olap_dsn, autocommit=True) as conn:
        for block in blocks:
            if "etl.run_incremental_update" in block:
                # the CRM changes the README's incremental update applies
                simulate.simulate(source.oltp_dsn, 50, seed=3)
            ran += run_block(conn, block)
        conn.execute("CALL etl.run_incremental_update()")
        for block in blocks:
            if "CALL " not in block:
                ran += run_block(conn, block)
    dbtools.report(request, f"ran {ran} README SQL statements")
