"""Fuzzing `b2bdwh import-csv`: broken folders end in a clear error, never a traceback or a
half import; accepted ones account for every row.

Each example starts from tests/data/crm_small and breaks it in one to three ways: a file
missing, empty, header only, or only a byte-order mark; a header renamed, dropped,
duplicated, upper-cased or reordered; a row with a field too few or too many; a file in
Latin-1 or UTF-16, invalid UTF-8 bytes in a field, a BOM; a bad or extreme date or number
(thousands of digits, exponents, NaN); a huge field; quotes, commas and line breaks inside
a field, an unclosed quote; a NUL; odd Unicode and names that differ only in case or spacing.

The importer must then either
- refuse, with a MalformedInput whose every problem names its file, and its line (and column
  for a field) where the break is, and leave the source exactly as it was (its fingerprint
  and import log unchanged); or
- import, and account for every row of every file: loaded into the source (by its name or
  opportunity_id) or in import.rejected_row with its line and reason.
Which of the two is known for most breaks (a bad number is refused, a reordered header is
fine); for the extreme ones (a 200,000-character field) either is allowed, but a failure
inside the database (an error without a line) never is.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

import dbtools
from b2bdwh import import_csv
from b2bdwh.db import CliError

SMALL = Path(__file__).resolve().parent / "data" / "crm_small"
FILES = import_csv.FILES
EXAMPLES = int(os.environ.get("IMPORT_FUZZ_EXAMPLES", "150"))
# Private-use characters stand for raw bytes in a field until the file is encoded.
MARKS = re.compile("[\ue000-\ue0ff]")


def read_small() -> dict[str, list[list[str]]]:
    """The clean folder as rows of fields, header first."""
    return {
        name: list(csv.reader(io.StringIO((SMALL / name).read_text(encoding="utf-8"))))
        for name in FILES
    }


# --- a folder being broken -------------------------------------------------------------------


@dataclass
class Folder:
    """The four files as rows of fields, how each is written, and what the breaks expect."""

    rows: dict[str, list[list[str]]] = field(default_factory=read_small)
    raw: dict[str, bytes] = field(default_factory=dict)  # mark -> the bytes it stands for
    encoding: dict[str, str] = field(default_factory=dict)
    bom: set[str] = field(default_factory=set)
    newline: dict[str, str] = field(default_factory=dict)
    whole: dict[str, bytes | None] = field(default_factory=dict)  # a file's bytes outright
    blank_after: dict[str, int] = field(default_factory=dict)  # a blank line after a row
    # Expectations: breaks that must be refused (file, row index or None, column or None),
    # and whether some break may go either way.
    refused: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    file_broken: set[str] = field(default_factory=set)  # refused as a whole file
    row_broken: set[tuple[str, int]] = field(default_factory=set)  # ragged, not UTF-8
    either: bool = False
    lines: dict[str, list[int]] = field(default_factory=dict)  # line of each row, when written

    def render(self, directory: Path) -> None:
        directory.mkdir()
        for name in FILES:
            if name in self.whole:
                if self.whole[name] is not None:
                    (directory / name).write_bytes(self.whole[name])
                continue
            out = io.StringIO()
            writer = csv.writer(out, lineterminator=self.newline.get(name, "\n"))
            starts, line = [], 1
            for index, row in enumerate(self.rows[name]):
                before = out.tell()
                writer.writerow(row)
                if index == self.blank_after.get(name):
                    out.write(self.newline.get(name, "\n"))
                starts.append(line)
                line += len(re.findall(r"\r\n|\r|\n", out.getvalue()[before:]))
            self.lines[name] = starts
            text = out.getvalue()
            encoding = self.encoding.get(name, "utf-8")
            data = MARKS.sub("", text).encode(encoding, errors="replace")
            if encoding != "utf-8" and not data.isascii():
                # Refused at its first byte that is not UTF-8 (a UTF-16 file at its header).
                self.refuse(name, None, None)
                if encoding == "utf-16":
                    self.file_broken.add(name)
            pieces = re.split(f"({MARKS.pattern})", text)
            data = b"".join(
                self.raw[p] if MARKS.fullmatch(p) else p.encode(encoding, errors="replace")
                for p in pieces
            )
            (directory / name).write_bytes((b"\xef\xbb\xbf" if name in self.bom else b"") + data)

    def column_index(self, name: str, column: str) -> int:
        return self.rows[name][0].index(column)

    def set(self, name: str, row: int, column: str, value: str) -> int | None:
        """Set a field of data row `row` (1 = first after the header, wrapped); its index, or
        None when an earlier break took the column or the field away."""
        index = 1 + (row - 1) % (len(self.rows[name]) - 1)
        if column not in self.rows[name][0]:
            return None
        fields = self.rows[name][index]
        position = self.column_index(name, column)
        if position >= len(fields):
            return None
        fields[position] = value
        return index

    def mark(self, data: bytes) -> str:
        """A character that the file will hold as these bytes."""
        mark = chr(0xE000 + len(self.raw))
        self.raw[mark] = data
        return mark

    def refuse(self, name: str, index: int | None, column: str | None) -> None:
        self.refused.append((name, index, column))

    def refuse_file(self, name: str) -> None:
        self.file_broken.add(name)
        self.refuse(name, None, None)


Break = Callable[[Folder], None]
file_name = st.sampled_from(list(FILES))
row_number = st.integers(1, 20)


def column_of(kinds: set[str]) -> st.SearchStrategy[tuple[str, str]]:
    """(file, column) among the columns of one kind."""
    return st.sampled_from([(f, c) for f, cols in FILES.items() for c in cols if c in kinds])


NUMBERS = import_csv.NUMERIC_COLUMNS
INTEGERS = import_csv.INT_COLUMNS
DATES = import_csv.DATE_COLUMNS
TEXT = {"sector", "office_location", "series", "manager", "regional_office"}
NAMES = {"account", "product", "sales_agent", "opportunity_id"}

# 2,800 bytes that do not compress: more than a unique name's btree entry can hold.
LONG_NAME = "".join(chr(0x400 + n) for n in random.Random(1).choices(range(256), k=1400))
BAD_NUMBERS = ["abc", "1,100.04", "$550", "1.2.3", "NaN", "Infinity", "1e", "--1", "\uff11\uff12",
               "٣", "0x1F", "1_000", "12 34", "∞"]  # fmt: skip
GOOD_NUMBERS = ["0", "-0", "+3", ".5", "5.", "1e5", "-2.5E-3", "1E+300", "999999999999.995"]
EXTREME_NUMBERS = ["1" * 5000, "0." + "1" * 20000, "1e1001", "1e-1001", "9" * 1001,
                   "1" * 131 + "." + "1" * 16384, "1e999999999999999999999"]  # fmt: skip
BAD_INTEGERS = ["2822.5", "1e3", "abc", "99999999999", "-2147483649", "1" * 5000, "4,000"]
GOOD_INTEGERS = ["0", "-1", "+7", "2147483647", "-2147483648", "007"]
BAD_DATES = ["10/20/2016", "2017-02-30", "2017-13-01", "0000-01-01", "2017-1-1", "20170101",
             "2017-01-01T00:00", "infinity", "2017-01-01 BC",
             "\uff12\uff10\uff11\uff17-01-01"]  # fmt: skip
GOOD_DATES = ["0001-01-01", "9999-12-31", "1899-12-31", "2017-01-01", " 2017-01-01 "]
ODD_TEXT = ["e\u0301\u0301", "\u202eevil", "👩‍👩‍👧", "שלום", "a,b", 'say "hi"', "two\nlines",
            "cr\ronly", "crlf\r\nin", "  padded  ", "\ufeffbom", "\\N", "NULL", ""]  # fmt: skip
INVALID_UTF8 = [b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80"]


def set_value(where: tuple[str, str], row: int, value: str, refused: bool | None) -> Break:
    """Put value into a field; refused: True, False or None (either is fine)."""

    def apply(folder: Folder) -> None:
        name, column = where
        index = folder.set(name, row, column, value)
        if index is None:
            return
        if refused:
            folder.refuse(name, index, column)
            if "\x00" in value:  # reported like bytes that are not UTF-8: the row goes no further
                folder.row_broken.add((name, index))
        elif refused is None:
            folder.either = True

    apply.__name__ = f"set {where} row {row} to {value[:20]!r}"
    return apply


def value_break(
    kinds: set[str], values: list[str], refused: bool | None
) -> st.SearchStrategy[Break]:
    return st.builds(
        set_value, column_of(kinds), row_number, st.sampled_from(values), st.just(refused)
    )


def whole_file(name_value: tuple[str, bytes | None], refuse: bool = True) -> Break:
    name, data = name_value

    def apply(folder: Folder) -> None:
        folder.whole[name] = data
        folder.refuse_file(name)

    apply.__name__ = f"{name} is {data[:20]!r}" if data is not None else f"{name} missing"
    return apply


def header_break(kind: str, name: str, column_pick: int) -> Break:
    def apply(folder: Folder) -> None:
        header = folder.rows[name][0]
        i = column_pick % len(header)
        if kind == "rename":
            header[i] = header[i] + "x"
        elif kind == "upper":
            header[i] = header[i].upper()
        elif kind == "duplicate":
            header[i] = header[(i + 1) % len(header)]
        elif kind == "drop":
            for row in folder.rows[name]:
                del row[i]
        elif kind == "reorder":  # fine: columns are matched by name
            for row in folder.rows[name]:
                row.append(row.pop(i))
            return
        folder.refuse_file(name)

    apply.__name__ = f"header of {name}: {kind} column {column_pick}"
    return apply


def ragged(name: str, row: int, longer: bool) -> Break:
    def apply(folder: Folder) -> None:
        index = 1 + (row - 1) % (len(folder.rows[name]) - 1)
        fields = folder.rows[name][index]
        if longer:
            fields.append("extra")
        elif len(fields) > 1:
            fields.pop()
        else:
            return
        folder.refuse(name, index, None)
        folder.row_broken.add((name, index))

    apply.__name__ = f"row {row} of {name} {'longer' if longer else 'shorter'}"
    return apply


def invalid_utf8(where: tuple[str, str], row: int, data: bytes) -> Break:
    def apply(folder: Folder) -> None:
        name, column = where
        index = folder.set(name, row, column, f"x{folder.mark(data)}y")
        if index is not None:
            folder.refuse(name, index, column)
            folder.row_broken.add((name, index))

    apply.__name__ = f"{data!r} in {where} row {row}"
    return apply


def encoded(name: str, encoding: str) -> Break:
    def apply(folder: Folder) -> None:
        folder.encoding[name] = encoding  # refused when not ASCII: see Folder.render

    apply.__name__ = f"{name} in {encoding}"
    return apply


def unclosed_quote(name: str, row: int) -> Break:
    def apply(folder: Folder) -> None:
        if folder.set(name, row, FILES[name][-1], folder.mark(b'"never closed')) is not None:
            folder.refuse_file(name)

    apply.__name__ = f"unclosed quote in row {row} of {name}"
    return apply


def style(kind: str, name: str, row: int) -> Break:
    def apply(folder: Folder) -> None:
        if kind == "bom":
            folder.bom.add(name)
        elif kind == "crlf":
            folder.newline[name] = "\r\n"
        elif kind == "cr":
            folder.newline[name] = "\r"
        elif kind == "blank":
            folder.blank_after[name] = row % len(folder.rows[name])

    apply.__name__ = f"{kind} in {name}"
    return apply


def same_name(kind: str, name: str, row: int) -> Break:
    """A dimension name repeated, or a reference changed, in case, spacing or punctuation:
    resolved or rejected with a reason, never refused."""

    def apply(folder: Folder) -> None:
        column = FILES[name][0] if kind == "duplicate" else "account"
        target = name if kind == "duplicate" else "sales_pipeline.csv"
        rows = folder.rows[target]
        index = 1 + (row - 1) % (len(rows) - 1)
        value = rows[index][folder.column_index(target, column)]
        variant = {0: value.upper(), 1: f"  {value} ", 2: value.replace(" ", "  "),
                   3: value + ".", 4: value + " Ltd"}[row % 5]  # fmt: skip
        if kind == "duplicate":
            rows.append(list(rows[index]))
            rows[-1][0] = variant
            if target == "sales_pipeline.csv":
                rows[-1][0] = value  # a duplicate opportunity_id
        else:
            rows[index][folder.column_index(target, column)] = variant

    apply.__name__ = f"{kind} name in {name} row {row}"
    return apply


breaks: st.SearchStrategy[Break] = st.one_of(
    st.builds(
        whole_file,
        st.tuples(
            file_name,
            st.sampled_from([None, b"", b"\xef\xbb\xbf", b"\n\n", b"  \r\n", b"\x00\x00", b"\xff"]),
        ),
    ),
    st.builds(lambda name: whole_file((name, ",".join(FILES[name]).encode() + b"\n")), file_name),
    st.builds(
        header_break,
        st.sampled_from(["rename", "upper", "duplicate", "drop", "reorder"]),
        file_name,
        st.integers(0, 9),
    ),
    st.builds(ragged, file_name, row_number, st.booleans()),
    value_break(NUMBERS, BAD_NUMBERS, True),
    value_break(NUMBERS, GOOD_NUMBERS, False),
    value_break(NUMBERS, EXTREME_NUMBERS, None),
    value_break(INTEGERS, BAD_INTEGERS, True),
    value_break(INTEGERS, GOOD_INTEGERS, False),
    value_break(DATES, BAD_DATES, True),
    value_break(DATES, GOOD_DATES, False),
    value_break(TEXT | NAMES, ODD_TEXT, False),
    value_break(TEXT, ["x" * 100_000, "é" * 60_000], False),
    value_break(TEXT | NAMES, ["y" * 200_000, "z" * 3_000_000], None),
    value_break(NAMES, [LONG_NAME], None),
    value_break(TEXT, ["bad\x00nul"], True),
    st.builds(invalid_utf8, column_of(TEXT | NAMES), row_number, st.sampled_from(INVALID_UTF8)),
    st.builds(encoded, file_name, st.sampled_from(["latin-1", "cp1252", "utf-16"])),
    st.builds(unclosed_quote, file_name, row_number),
    st.builds(style, st.sampled_from(["bom", "crlf", "cr", "blank"]), file_name, row_number),
    st.builds(same_name, st.sampled_from(["duplicate", "reference"]), file_name, row_number),
    st.builds(
        set_value,
        column_of(TEXT),
        row_number,
        st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs", "Co"))),
        st.just(False),
    ),
)


# --- the outcome -----------------------------------------------------------------------------

LOCATION = re.compile(
    r"^(?P<file>[a-z_]+\.csv)(?: line (?P<line>\d+))?(?:,? column (?P<col>.+?))?:"
)


def parse_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """An accepted file as an independent reader sees it: its header, and (line, fields) of
    each data row."""
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip() for c in next(reader)]
    out, previous = [], reader.line_num
    for fields in reader:
        if fields:
            out.append((previous + 1, fields))
        previous = reader.line_num
    return header, out


def check_refusal(folder: Folder, error: import_csv.MalformedInput) -> None:
    where = []
    for problem in error.problems:
        m = LOCATION.match(problem)
        assert m and m["file"] in FILES, f"a problem that names no file: {problem!r}"
        assert m["line"] or "missing file" in problem, f"a problem without a line: {problem!r}"
        where.append((m["file"], int(m["line"] or 0), m["col"]))
    for name, index, column in folder.refused:
        if name in folder.file_broken and index is not None:
            continue  # the whole file is refused first
        mine = [w for w in where if w[0] == name]
        assert mine, f"nothing reported for {name}: {error.problems}"
        if index is None or name not in folder.lines or name in folder.encoding:
            continue
        if (name, index) in folder.row_broken and column is not None:
            continue  # the row's shape or bytes are reported first
        line = folder.lines[name][index]
        if column is None:
            assert any(w[1] == line for w in mine), (name, line, error.problems)
        else:
            assert (name, line, column) in where, (name, line, column, error.problems)


def check_import(directory: Path, dsn: str, result: import_csv.Result) -> None:
    """Every row of every file is loaded or in import.rejected_row, with its line."""
    logged = dbtools.query(
        dsn,
        "SELECT file_name, line_number, kind, reason FROM import.rejected_row"
        " WHERE import_run_id = %s",
        (result.run_id,),
    )
    assert all(reason for *_, reason in logged), "a rejected row without a reason"
    rejected = {(f, line) for f, line, kind, _ in logged if kind == "rejected"}
    keys = {
        "accounts.csv": ("account", "SELECT account_name FROM public.accounts"),
        "products.csv": ("product", "SELECT product_name FROM public.products"),
        "sales_teams.csv": ("sales_agent", "SELECT sales_agent_name FROM public.sales_agents"),
        "sales_pipeline.csv": (
            "opportunity_id",
            "SELECT opportunity_id FROM public.sales_pipeline",
        ),
    }
    for name, (column, query) in keys.items():
        header, rows = parse_rows(directory / name)
        report = result.plan.files[name]
        assert report.read == len(rows) == report.loaded + report.rejected, (name, report)
        stored = Counter(r[0] for r in dbtools.query(dsn, query))
        assert sum(stored.values()) == report.loaded, (name, report)
        kept = Counter(
            fields[header.index(column)].strip()
            for line, fields in rows
            if (name, line) not in rejected
        )
        assert kept == stored, f"{name}: loaded rows are not the rows not rejected"
        assert Counter(f for f, *_ in logged)[name] == report.rejected + report.kept


@dataclass
class Tally:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    t = Tally()
    yield t
    dbtools.report(request, f"\nimport fuzz: {t.cases} folders, " + ", ".join(
        f"{n} {what}" for what, n in sorted(t.outcomes.items())))  # fmt: skip


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("IMPORT_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(changes=st.lists(breaks, min_size=1, max_size=3))
@example(changes=[set_value(("accounts.csv", "employees"), 2, "1" * 5000, True)])
@example(changes=[set_value(("products.csv", "sales_price"), 2, "0." + "1" * 20000, None)])
@example(changes=[set_value(("accounts.csv", "account"), 2, LONG_NAME, None)])
def test_a_broken_folder_is_refused_clearly_or_imported_whole(oltp_dsn, tmp_path_factory, tally,
                                                              changes):  # fmt: skip
    folder = Folder()
    for change in changes:
        note(change.__name__)
        change(folder)
    directory = tmp_path_factory.mktemp("fuzz") / "crm"
    folder.render(directory)
    tally.cases += 1
    before = dbtools.source_fingerprint(oltp_dsn)
    runs = dbtools.scalar(oltp_dsn, "SELECT count(*) FROM import.import_run")
    try:
        result = import_csv.import_directory(directory, oltp_dsn, max_errors=1000)
    except import_csv.MalformedInput as error:
        note(str(error))
        tally.outcomes["refused"] += 1
        assert folder.refused or folder.either, f"a sound folder was refused: {error}"
        check_refusal(folder, error)
        assert dbtools.source_fingerprint(oltp_dsn) == before, "a refused import changed the source"
        assert dbtools.scalar(oltp_dsn, "SELECT count(*) FROM import.import_run") == runs
        return
    except CliError as error:  # a failure past the checks: no line to act on
        pytest.fail(f"refused without a file and line: {error}")
    tally.outcomes["imported"] += 1
    tally.outcomes["rows rejected in imports"] += len(result.plan.issues)
    assert not folder.refused, f"imported though broken: {folder.refused}"
    check_import(directory, oltp_dsn, result)


def cli(dsn: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "B2B_OLTP_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "b2bdwh", "import-csv", str(directory)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (set_value(("accounts.csv", "employees"), 2, "1" * 5000, True), "out of range"),
        (set_value(("sales_pipeline.csv", "close_value"), 2, "0." + "1" * 20000, True), "digits"),
        (invalid_utf8(("accounts.csv", "sector"), 2, b"\xc3("), "not UTF-8"),
        (unclosed_quote("products.csv", 1), "products.csv line"),
    ],
    ids=["5000-digit integer", "20000 decimals", "invalid UTF-8", "unclosed quote"],
)
def test_cli_refuses_with_the_place_never_a_traceback(oltp_dsn, tmp_path, change, expected):
    import_csv.import_directory(SMALL, oltp_dsn)
    before = dbtools.source_fingerprint(oltp_dsn)
    folder = Folder()
    change(folder)
    folder.render(tmp_path / "crm")
    proc = cli(oltp_dsn, tmp_path / "crm")
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert re.search(r"\w+\.csv line \d+", proc.stderr), proc.stderr
    assert dbtools.source_fingerprint(oltp_dsn) == before
