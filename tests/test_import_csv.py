"""`b2bdwh import-csv`: the CRM CSV importer, against a real migrated source database.

Fixtures: tests/data/crm_small is a clean export; tests/data/crm_messy holds
names to normalise and rows to reject. Malformed variants are built in
tmp_path from crm_small.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import dbtools
from b2bdwh import import_csv, source
from b2bdwh.db import CliError

DATA = Path(__file__).resolve().parent / "data"
SMALL = DATA / "crm_small"
MESSY = DATA / "crm_messy"


query = dbtools.query


def do_import(dsn: str, directory: Path, **kwargs) -> import_csv.Result:
    return import_csv.import_directory(directory, dsn, **kwargs)


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Everything an import may change: the four tables and the import log."""
    state = {
        table: query(dsn, f"SELECT * FROM public.{table} ORDER BY 1")
        for table in source.SOURCE_TABLES
    }
    state["import_run"] = query(dsn, "SELECT import_run_id FROM import.import_run ORDER BY 1")
    state["rejected_row"] = query(dsn, "SELECT count(*) FROM import.rejected_row")
    return state


def copy_small(tmp_path: Path) -> Path:
    target = tmp_path / "crm"
    shutil.copytree(SMALL, target)
    return target


def edit_line(path: Path, line: int, change: Callable[[str], str]) -> None:
    """Change one physical line (1 = header) of a UTF-8 file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = change(lines[line - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def set_field(path: Path, line: int, column: str, value: str) -> None:
    header = path.read_text(encoding="utf-8").split("\n")[0].split(",")
    index = header.index(column)

    def change(text: str) -> str:
        fields = text.split(",")
        fields[index] = value
        return ",".join(fields)

    edit_line(path, line, change)


def rejected(dsn: str, run_id: int) -> dict[tuple[str, int], tuple]:
    rows = query(
        dsn,
        "SELECT file_name, line_number, kind, reason_code, reason, record"
        " FROM import.rejected_row WHERE import_run_id = %s",
        (run_id,),
    )
    return {(r[0], r[1]): r[2:] for r in rows}


# --- a clean import -------------------------------------------------------------------------


def test_clean_import_loads_typed_values_with_ids_in_file_order(oltp_dsn):
    result = do_import(oltp_dsn, SMALL)

    with psycopg.connect(oltp_dsn) as conn:
        assert source.counts(conn) == {
            "accounts": 6,
            "products": 4,
            "sales_agents": 4,
            "sales_pipeline": 8,
        }
    assert query(oltp_dsn, "SELECT account_id, account_name FROM accounts ORDER BY 1") == [
        (1, "Acme Corporation"),
        (2, "Bluth Company"),
        (3, "Cheers"),
        (4, "Gekko & Co"),
        (5, "Massive Dynamic"),
        (6, "Zoë Holdings"),
    ]
    assert query(oltp_dsn, "SELECT product_id, product_name FROM products ORDER BY 1") == [
        (1, "GTX Basic"),
        (2, "GTX Pro"),
        (3, "MG Special"),
        (4, "GTK 500"),
    ]
    assert query(oltp_dsn, "SELECT sales_agent_id, sales_agent_name FROM sales_agents ORDER BY 1")[
        -1
    ] == (4, "Vicki Laflamme")
    # Typed values; empty fields are NULL; a parent may come later in the file.
    assert query(oltp_dsn, "SELECT * FROM accounts WHERE account_id IN (2, 3, 6) ORDER BY 1") == [
        (2, "Bluth Company", "technology", 1993, Decimal("1242.32"), 3027, "United States", 1),
        (3, "Cheers", "entertainment", 1993, Decimal("4269.9"), 6472, "United States", 5),
        (6, "Zoë Holdings", "finance", None, None, None, "Norway", None),
    ]
    assert query(oltp_dsn, "SELECT * FROM products WHERE product_id = 4") == [
        (4, "GTK 500", "GTK", Decimal("26768"))
    ]
    assert query(
        oltp_dsn,
        "SELECT * FROM sales_pipeline WHERE opportunity_id IN ('Z063OYW0', 'ZNBS69V1', 'PE84CX4O')"
        " ORDER BY 1",
    ) == [
        ("PE84CX4O", 4, 2, 5, "Engaging", date(2017, 2, 1), None, None),
        ("Z063OYW0", 2, 2, 1, "Won", date(2016, 10, 25), date(2017, 3, 11), Decimal("4514.50")),
        ("ZNBS69V1", 1, 1, None, "Prospecting", None, None, None),
    ]
    # The identities continue above the loaded keys.
    with psycopg.connect(oltp_dsn) as conn:
        new_id = conn.execute(
            "INSERT INTO accounts (account_name) VALUES ('New') RETURNING account_id"
        ).fetchone()
        conn.rollback()
    assert new_id == (7,)

    # The import is logged, with its summary, and nothing was rejected.
    assert result.run_id is not None
    run = query(
        oltp_dsn,
        "SELECT directory, finished_at >= started_at, db_user = current_user,"
        " run_summary -> 'files' -> 'sales_pipeline.csv' ->> 'loaded',"
        " run_summary -> 'source_counts' ->> 'accounts'"
        " FROM import.import_run WHERE import_run_id = %s",
        (result.run_id,),
    )
    assert run == [(str(SMALL), True, True, "8", "6")]
    assert rejected(oltp_dsn, result.run_id) == {}
    assert f"import id {result.run_id}" in result.summary
    assert "No row was rejected" in result.summary


def test_an_import_replaces_everything_and_keeps_the_log(oltp_dsn):
    first = do_import(oltp_dsn, MESSY)
    second = do_import(oltp_dsn, SMALL)
    assert second.run_id is not None and first.run_id is not None
    assert second.run_id > first.run_id
    names = [r[0] for r in query(oltp_dsn, "SELECT account_name FROM accounts ORDER BY 1")]
    assert "Initech" not in names  # only in the messy set
    assert len(names) == 6
    # The first import's rejected rows are still there to look at.
    assert len(rejected(oltp_dsn, first.run_id)) == 12


def test_white_space_around_values_is_trimmed(oltp_dsn):
    do_import(oltp_dsn, MESSY)
    # '  Bluth Company  ' is loaded trimmed; ' Darcel Schlecht ' is an exact match.
    assert query(oltp_dsn, "SELECT account_name FROM accounts WHERE account_id = 2") == [
        ("Bluth Company",)
    ]
    assert query(
        oltp_dsn,
        "SELECT a.sales_agent_name FROM sales_pipeline p JOIN sales_agents a USING"
        " (sales_agent_id) WHERE opportunity_id = 'OPP00004'",
    ) == [("Darcel Schlecht",)]


def test_dry_run_checks_everything_and_writes_nothing(oltp_dsn):
    do_import(oltp_dsn, SMALL)
    before = snapshot(oltp_dsn)
    result = do_import(oltp_dsn, MESSY, dry_run=True)
    assert result.run_id is None
    assert "nothing was written" in result.summary
    assert "'GTXPro' -> 'GTX Pro' (2 rows)" in result.summary
    assert snapshot(oltp_dsn) == before


# --- names: normalisation and rejections ----------------------------------------------------


def test_names_that_differ_in_case_space_or_punctuation_resolve_and_are_reported(oltp_dsn):
    result = do_import(oltp_dsn, MESSY)

    def pipeline(opportunity: str) -> tuple:
        rows = query(
            oltp_dsn,
            "SELECT a.sales_agent_name, p.product_name, c.account_name FROM sales_pipeline s"
            " JOIN sales_agents a USING (sales_agent_id) JOIN products p USING (product_id)"
            " LEFT JOIN accounts c USING (account_id) WHERE opportunity_id = %s",
            (opportunity,),
        )
        assert len(rows) == 1, f"{opportunity} was not loaded"
        return rows[0]

    assert pipeline("OPP00001") == ("Anna Snelling", "GTX Pro", "Cheers")  # 'GTXPro': space
    # 'Anna  Snelling' (space), 'gtx basic' (case)
    assert pipeline("OPP00003") == ("Anna Snelling", "GTX Basic", "Bluth Company")
    assert pipeline("OPP00004")[2] == "Bluth Company"  # 'Bluth Company.': punctuation
    # 'Gtx-Pro' (a rejected duplicate of GTX Pro) and 'acme corporation' resolve to the kept rows.
    assert pipeline("OPP00011") == ("Vicki Laflamme", "GTX Pro", "Acme Corporation")
    # accounts.subsidiary_of 'massive-dynamic'
    assert query(
        oltp_dsn,
        "SELECT p.account_name FROM accounts c JOIN accounts p"
        " ON p.account_id = c.parent_account_id WHERE c.account_name = 'Cheers'",
    ) == [("Massive Dynamic",)]

    assert dict(result.plan.mappings) == {
        ("accounts.csv", "subsidiary_of", "massive-dynamic", "Massive Dynamic"): 1,
        ("sales_pipeline.csv", "account", "Bluth Company.", "Bluth Company"): 1,
        ("sales_pipeline.csv", "account", "acme corporation", "Acme Corporation"): 1,
        ("sales_pipeline.csv", "product", "GTXPro", "GTX Pro"): 2,
        ("sales_pipeline.csv", "product", "Gtx-Pro", "GTX Pro"): 1,
        ("sales_pipeline.csv", "product", "gtx basic", "GTX Basic"): 1,
        ("sales_pipeline.csv", "sales_agent", "Anna  Snelling", "Anna Snelling"): 1,
    }
    for line in (
        "sales_pipeline.csv product: 'GTXPro' -> 'GTX Pro' (2 rows)",
        "sales_pipeline.csv sales_agent: 'Anna  Snelling' -> 'Anna Snelling' (1 row)",
        "sales_pipeline.csv account: 'Bluth Company.' -> 'Bluth Company' (1 row)",
        "accounts.csv subsidiary_of: 'massive-dynamic' -> 'Massive Dynamic' (1 row)",
    ):
        assert line in result.summary
    mappings = query(
        oltp_dsn,
        "SELECT m ->> 'from', m ->> 'to', (m ->> 'rows')::int FROM import.import_run,"
        " jsonb_array_elements(run_summary -> 'mappings') AS m"
        " WHERE import_run_id = %s AND m ->> 'column' = 'product' ORDER BY 1",
        (result.run_id,),
    )
    assert mappings == [
        ("GTXPro", "GTX Pro", 2),
        ("Gtx-Pro", "GTX Pro", 1),
        ("gtx basic", "GTX Basic", 1),
    ]
    # Rows matched by normalised names, per file.
    assert result.plan.files["sales_pipeline.csv"].normalised == 5
    assert result.plan.files["accounts.csv"].normalised == 1


def test_unresolvable_rows_are_rejected_with_reasons_in_the_log(oltp_dsn):
    result = do_import(oltp_dsn, MESSY)
    assert result.run_id is not None
    log = rejected(oltp_dsn, result.run_id)
    pipeline = {line: row for (file, line), row in log.items() if file == "sales_pipeline.csv"}
    assert {line: row[:2] for line, row in pipeline.items()} == {
        6: ("rejected", "unknown_sales_agent"),
        7: ("rejected", "unknown_product"),
        8: ("rejected", "unknown_account"),
        9: ("rejected", "duplicate_opportunity_id"),
        10: ("rejected", "empty_sales_agent"),
        11: ("rejected", "unknown_sales_agent"),
    }
    assert pipeline[6][2] == "sales_agent 'Bob Nobody' is not in sales_teams.csv"
    assert pipeline[8][2] == "account 'Umbrella Corporation' is not in accounts.csv"
    assert pipeline[9][2] == "duplicate opportunity_id 'OPP00001' (first on line 2)"
    assert pipeline[11][2] == (
        "sales_agent 'Nobody Atall' is not in sales_teams.csv; "
        "product 'No Such Product' is not in products.csv"
    )
    # The raw record, as read (untrimmed, empty fields as "").
    assert pipeline[10][3] == {
        "opportunity_id": "OPP00009",
        "sales_agent": "",
        "product": "GTX Basic",
        "account": "Initech",
        "deal_stage": "Engaging",
        "engage_date": "2017-01-12",
        "close_date": "",
        "close_value": "",
    }
    # Rejected rows are not in the source; the first OPP00001 is, with its own values.
    loaded = query(oltp_dsn, "SELECT opportunity_id, close_value FROM sales_pipeline ORDER BY 1")
    assert [r[0] for r in loaded] == [
        "OPP00001", "OPP00002", "OPP00003", "OPP00004", "OPP00011", "OPP00012",
    ]  # fmt: skip
    assert loaded[0] == ("OPP00001", Decimal("4514"))

    report = result.plan.files["sales_pipeline.csv"]
    assert (report.read, report.loaded, report.rejected) == (12, 6, 6)
    summary = result.summary
    assert "Rejected rows (not loaded), by reason:" in summary
    assert "     1  sales_agent 'Bob Nobody' is not in sales_teams.csv" in summary
    assert f"import_run_id = {result.run_id}" in summary
    counted = query(
        oltp_dsn,
        "SELECT (run_summary -> 'files' -> 'sales_pipeline.csv' ->> 'rejected')::int"
        " FROM import.import_run WHERE import_run_id = %s",
        (result.run_id,),
    )
    assert counted == [(6,)]


def test_rows_without_an_opportunity_id_or_a_deal_stage_are_rejected(oltp_dsn, tmp_path):
    directory = copy_small(tmp_path)
    set_field(directory / "sales_pipeline.csv", 3, "opportunity_id", "  ")
    set_field(directory / "sales_pipeline.csv", 5, "deal_stage", "")
    result = do_import(oltp_dsn, directory)
    assert result.run_id is not None
    log = rejected(oltp_dsn, result.run_id)
    assert log[("sales_pipeline.csv", 3)][:3] == (
        "rejected",
        "empty_opportunity_id",
        "no opportunity_id",
    )
    assert log[("sales_pipeline.csv", 5)][:3] == ("rejected", "empty_deal_stage", "no deal_stage")
    assert len(log) == 2
    assert query(oltp_dsn, "SELECT count(*) FROM sales_pipeline") == [(6,)]


def test_duplicate_dimension_names_keep_the_first_and_reject_the_later(oltp_dsn):
    result = do_import(oltp_dsn, MESSY)
    assert result.run_id is not None
    log = rejected(oltp_dsn, result.run_id)
    assert log[("accounts.csv", 5)][:2] == ("rejected", "duplicate_normalised_name")
    assert (
        "'acme corporation' is the same name as 'Acme Corporation' on line 2"
        in (log[("accounts.csv", 5)][2])
    )
    assert log[("accounts.csv", 8)][:2] == ("rejected", "empty_name")
    assert log[("accounts.csv", 9)][:3] == (
        "rejected",
        "duplicate_name",
        "duplicate account 'Acme Corporation' (first on line 2)",
    )
    assert log[("products.csv", 4)][:2] == ("rejected", "duplicate_normalised_name")
    assert log[("sales_teams.csv", 5)][:2] == ("rejected", "duplicate_name")
    # The first of each is kept, with its own values; ids stay dense in file order.
    assert query(oltp_dsn, "SELECT * FROM products ORDER BY 1") == [
        (1, "GTX Basic", "GTX", Decimal("550")),
        (2, "GTX Pro", "GTX", Decimal("4821")),
        (3, "MG Special", "MG", Decimal("55")),
    ]
    assert query(
        oltp_dsn, "SELECT sector FROM accounts WHERE account_name = 'Acme Corporation'"
    ) == [("technology",)]
    assert query(
        oltp_dsn, "SELECT manager_name FROM sales_agents WHERE sales_agent_name = 'Vicki Laflamme'"
    ) == [("Celia Rouche",)]
    assert (result.plan.files["accounts.csv"].read, result.plan.files["accounts.csv"].loaded) == (
        8,
        5,
    )


def test_an_unresolved_parent_is_loaded_as_null_and_logged_as_kept(oltp_dsn):
    result = do_import(oltp_dsn, MESSY)
    assert result.run_id is not None
    assert query(
        oltp_dsn, "SELECT parent_account_id FROM accounts WHERE account_name = 'Initech'"
    ) == [(None,)]
    kind, code, reason, record = rejected(oltp_dsn, result.run_id)[("accounts.csv", 6)]
    assert (kind, code) == ("kept", "unknown_parent")
    assert "subsidiary_of 'Nonexistent Holdings'" in reason
    assert record["subsidiary_of"] == "Nonexistent Holdings"
    assert result.plan.files["accounts.csv"].kept == 1
    assert "Rows loaded with an issue, by reason:" in result.summary


def test_deal_stages_are_loaded_as_given(oltp_dsn):
    do_import(oltp_dsn, MESSY)
    assert query(
        oltp_dsn, "SELECT deal_stage FROM sales_pipeline WHERE opportunity_id = 'OPP00004'"
    ) == [("Closed Won",)]


# --- malformed input: an error naming file, line and column; nothing imported ---------------


def remove(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def write_text(name: str, content: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(content, encoding="utf-8")


def field(name: str, line: int, column: str, value: str) -> Callable[[Path], None]:
    return lambda d: set_field(d / name, line, column, value)


def line_edit(name: str, line: int, change: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda d: edit_line(d / name, line, change)


def latin1_accounts(d: Path) -> None:
    path = d / "accounts.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))


def rename_header(name: str, old: str, new: str) -> Callable[[Path], None]:
    return line_edit(name, 1, lambda h: h.replace(old, new))


MALFORMED = {
    "missing file": (remove("products.csv"), ["products.csv: missing file"]),
    "empty file": (
        write_text("sales_teams.csv", ""),
        ["sales_teams.csv line 1: the file is empty"],
    ),
    "header only": (
        write_text("products.csv", "product,series,sales_price\n"),
        ["products.csv line 2: no rows after the header"],
    ),
    "misspelled column": (
        rename_header("accounts.csv", "subsidiary_of", "subsidiary"),
        [
            "accounts.csv line 1, column subsidiary: unexpected column in the header",
            "accounts.csv line 1, column subsidiary_of: missing from the header",
        ],
    ),
    "missing column": (
        lambda d: (d / "products.csv").write_text("product,series\nGTX Basic,GTX\n"),
        ["products.csv line 1, column sales_price: missing from the header"],
    ),
    "extra column": (
        lambda d: (d / "products.csv").write_text("product,series,sales_price,notes\nA,B,1,x\n"),
        ["products.csv line 1, column notes: unexpected column in the header"],
    ),
    "duplicate column": (
        rename_header("sales_teams.csv", "manager", "sales_agent"),
        ["sales_teams.csv line 1, column sales_agent: duplicate column in the header"],
    ),
    "short row": (
        line_edit("accounts.csv", 3, lambda t: t.rsplit(",", 1)[0]),
        [
            "accounts.csv line 3, column subsidiary_of: "
            "missing; the row has 6 fields, the header has 7"
        ],
    ),
    "long row": (
        line_edit("sales_pipeline.csv", 4, lambda t: t + ",extra"),
        ["sales_pipeline.csv line 4: the row has 9 fields, the header has 8"],
    ),
    "not UTF-8": (
        latin1_accounts,
        ["accounts.csv line 7, column account: not UTF-8 text (byte 0xeb)"],
    ),
    "not UTF-8 in the header": (
        lambda d: (d / "products.csv").write_bytes(b"product,s\xe9ries,sales_price\nA,B,1\n"),
        ["products.csv line 1, column #2: not UTF-8 text (byte 0xe9)"],
    ),
    "bad quoting": (
        line_edit("products.csv", 3, lambda t: '"GTX" Pro,GTX,4821'),
        ["products.csv line 3: malformed CSV"],
    ),
    "unclosed quote": (
        line_edit("products.csv", 3, lambda t: '"GTX Pro,GTX,4821'),
        ["products.csv line 3: malformed CSV in the record starting here (read on to line"],
    ),
    "NUL character": (
        field("sales_teams.csv", 2, "manager", "Dustin\x00"),
        ["sales_teams.csv line 2, column manager: contains a NUL character"],
    ),
    "not a number": (
        field("sales_pipeline.csv", 4, "close_value", "abc"),
        ["sales_pipeline.csv line 4, column close_value: 'abc' is not a number"],
    ),
    "thousands separator": (
        field("accounts.csv", 2, "revenue", '"1,100.04"'),
        ["accounts.csv line 2, column revenue: '1,100.04' is not a number"],
    ),
    "currency sign": (
        field("products.csv", 2, "sales_price", "$550"),
        ["products.csv line 2, column sales_price: '$550' is not a number"],
    ),
    "not a whole number": (
        field("accounts.csv", 2, "employees", "2822.5"),
        ["accounts.csv line 2, column employees: '2822.5' is not a whole number"],
    ),
    "integer out of range": (
        field("accounts.csv", 4, "year_established", "99999999999"),
        ["accounts.csv line 4, column year_established: '99999999999' is out of range"],
    ),
    "not a date": (
        field("sales_pipeline.csv", 2, "engage_date", "10/20/2016"),
        [
            "sales_pipeline.csv line 2, column engage_date: "
            "'10/20/2016' is not a date in YYYY-MM-DD form"
        ],
    ),
    "impossible date": (
        field("sales_pipeline.csv", 3, "close_date", "2017-02-30"),
        ["sales_pipeline.csv line 3, column close_date: '2017-02-30' is not a valid date"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_an_error_and_nothing_is_imported(oltp_dsn, tmp_path, case):
    do_import(oltp_dsn, MESSY)  # the previous contents to keep
    before = snapshot(oltp_dsn)
    assert len(before["sales_pipeline"]) == 6
    directory = copy_small(tmp_path)
    breaker, expected = MALFORMED[case]
    breaker(directory)

    with pytest.raises(import_csv.MalformedInput) as caught:
        do_import(oltp_dsn, directory)

    message = str(caught.value)
    for text in expected:
        assert any(p.startswith(text) for p in caught.value.problems), (text, message)
    assert caught.value.total == len(caught.value.problems)
    assert "nothing was imported, the source is unchanged" in message
    assert snapshot(oltp_dsn) == before


def test_all_problems_are_reported_together_up_to_the_limit(oltp_dsn, tmp_path):
    directory = copy_small(tmp_path)
    set_field(directory / "accounts.csv", 2, "revenue", "lots")
    set_field(directory / "products.csv", 3, "sales_price", "n/a")
    for line in range(2, 10):
        set_field(directory / "sales_pipeline.csv", line, "engage_date", "someday")
    (directory / "sales_teams.csv").unlink()

    with pytest.raises(import_csv.MalformedInput) as caught:
        do_import(oltp_dsn, directory)
    problems = caught.value.problems
    assert caught.value.total == 11
    assert problems[0] == "accounts.csv line 2, column revenue: 'lots' is not a number"
    assert problems[1] == "products.csv line 3, column sales_price: 'n/a' is not a number"
    assert problems[2].startswith("sales_teams.csv: missing file")
    assert problems[-1].startswith("sales_pipeline.csv line 9, column engage_date")

    with pytest.raises(import_csv.MalformedInput) as caught:
        do_import(oltp_dsn, directory, max_errors=4)
    assert len(caught.value.problems) == 4
    assert caught.value.total == 11
    assert "... and 7 more" in str(caught.value)


def test_a_byte_order_mark_and_windows_line_endings_are_fine(oltp_dsn, tmp_path):
    directory = copy_small(tmp_path)
    for path in directory.iterdir():
        content = path.read_text(encoding="utf-8").replace("\n", "\r\n")
        path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    result = do_import(oltp_dsn, directory)
    assert result.plan.files["sales_pipeline.csv"].loaded == 8
    assert query(oltp_dsn, "SELECT account_name FROM accounts WHERE account_id = 1") == [
        ("Acme Corporation",)
    ]
    assert query(
        oltp_dsn, "SELECT deal_stage FROM sales_pipeline WHERE opportunity_id = '1C1I7A6R'"
    ) == [("Won",)]


def test_a_quoted_value_may_hold_commas_and_line_breaks(oltp_dsn, tmp_path):
    directory = copy_small(tmp_path)
    set_field(directory / "accounts.csv", 5, "office_location", '"Cedar Rapids, Iowa\nUS"')
    result = do_import(oltp_dsn, directory)
    assert query(oltp_dsn, "SELECT office_location FROM accounts WHERE account_id = 4") == [
        ("Cedar Rapids, Iowa\nUS",)
    ]
    # Lines after the two-line record keep their numbers in messages.
    set_field(directory / "accounts.csv", 7, "employees", "many")
    with pytest.raises(import_csv.MalformedInput, match=r"accounts\.csv line 7, column employees"):
        do_import(oltp_dsn, directory)
    assert result.plan.files["accounts.csv"].loaded == 6


def test_a_failure_inside_the_database_leaves_the_previous_contents(oltp_dsn, tmp_path):
    """The four tables are emptied and refilled in one transaction: a failure on
    the last table (here a constraint the importer does not know) undoes it all."""
    do_import(oltp_dsn, MESSY)
    before = snapshot(oltp_dsn)
    directory = copy_small(tmp_path)
    set_field(directory / "sales_pipeline.csv", 9, "deal_stage", "Forbidden")
    with psycopg.connect(oltp_dsn) as conn:
        conn.execute(
            "ALTER TABLE sales_pipeline ADD CONSTRAINT test_no_forbidden"
            " CHECK (deal_stage <> 'Forbidden')"
        )
    try:
        with pytest.raises(CliError, match=r"test_no_forbidden.*nothing was imported"):
            do_import(oltp_dsn, directory)
        assert snapshot(oltp_dsn) == before
    finally:
        with psycopg.connect(oltp_dsn) as conn:
            conn.execute("ALTER TABLE sales_pipeline DROP CONSTRAINT test_no_forbidden")


def test_a_busy_source_makes_the_import_give_up_cleanly(oltp_dsn):
    do_import(oltp_dsn, MESSY)
    before = snapshot(oltp_dsn)
    with psycopg.connect(oltp_dsn) as holder:
        holder.execute("SELECT count(*) FROM sales_agents")  # holds ACCESS SHARE until rollback
        with pytest.raises(CliError, match=r"locked by another session.*nothing was imported"):
            do_import(oltp_dsn, SMALL, lock_timeout=0.2)
        holder.rollback()
    assert snapshot(oltp_dsn) == before


def test_a_database_without_the_migrations_is_an_error_that_says_what_to_do():
    name = f"b2bdwh_t_import_bare_{dbtools.RUN_TAG}"
    dsn = dbtools.create_database(name)
    try:
        with pytest.raises(
            CliError, match=r"lacks import\.import_run.*b2bdwh migrate --target oltp"
        ):
            do_import(dsn, SMALL)
    finally:
        dbtools.drop_database(name)


def test_a_missing_directory_is_an_error(oltp_dsn, tmp_path):
    with pytest.raises(CliError, match="no such directory"):
        do_import(oltp_dsn, tmp_path / "nowhere")


# --- the command line -----------------------------------------------------------------------


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "B2B_OLTP_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "b2bdwh", "import-csv", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_cli_imports_and_prints_a_summary(oltp_dsn):
    proc = cli(oltp_dsn, str(SMALL))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    run_id = query(oltp_dsn, "SELECT max(import_run_id) FROM import.import_run")[0][0]
    dbname = psycopg.conninfo.conninfo_to_dict(oltp_dsn)["dbname"]
    assert f"Imported {SMALL} into database {dbname} at " in out
    assert f"import id {run_id}." in out
    assert "  sales_pipeline.csv     8       8" in out
    assert "No row was rejected or loaded with an issue." in out
    assert query(oltp_dsn, "SELECT count(*) FROM sales_pipeline") == [(8,)]


def test_cli_reports_rejections_and_how_to_see_them(oltp_dsn):
    proc = cli(oltp_dsn, str(MESSY))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    run_id = query(oltp_dsn, "SELECT max(import_run_id) FROM import.import_run")[0][0]
    assert "sales_pipeline.csv product: 'GTXPro' -> 'GTX Pro' (2 rows)" in out
    assert "product 'GTX Ultra' is not in products.csv" in out
    assert f"import.rejected_row, import_run_id = {run_id}" in out
    # The printed command works and shows the rejected rows.
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("psql "))
    shown = subprocess.run(
        [*shlex.split(command), "-X"], capture_output=True, text=True, check=True
    ).stdout
    assert "Bob Nobody" in shown
    assert "(12 rows)" in shown


def test_cli_malformed_input_exits_non_zero_with_the_errors(oltp_dsn, tmp_path):
    do_import(oltp_dsn, SMALL)
    before = snapshot(oltp_dsn)
    directory = copy_small(tmp_path)
    set_field(directory / "sales_pipeline.csv", 9, "close_value", "abc")
    proc = cli(oltp_dsn, str(directory))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"b2bdwh import-csv: 1 problem in {directory}")
    assert "sales_pipeline.csv line 9, column close_value: 'abc' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(oltp_dsn) == before


def test_cli_dry_run_and_missing_directory(oltp_dsn, tmp_path):
    do_import(oltp_dsn, SMALL)
    before = snapshot(oltp_dsn)
    proc = cli(oltp_dsn, "--dry-run", str(MESSY))
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run: nothing was written" in proc.stdout
    assert snapshot(oltp_dsn) == before

    proc = cli(oltp_dsn, str(tmp_path / "nowhere"))
    assert proc.returncode == 1
    assert "no such directory" in proc.stderr
