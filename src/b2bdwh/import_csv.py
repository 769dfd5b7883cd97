"""`b2bdwh import-csv DIR`: replace the source's contents with a folder of CRM CSV files.

The folder holds accounts.csv, products.csv, sales_teams.csv and
sales_pipeline.csv with the contract's headers. The import is all or nothing:

1. Every file is read and checked first. Malformed input (a missing or empty
   file, a wrong header, a ragged row, text that is not UTF-8, a bad date or
   number, a number or a name too large for its column) is an error naming
   file, line and column; all such errors are reported together and nothing
   is written. A value that passes these checks fits its column.
2. References by name are resolved: exact names first, then names compared
   without case, white space and punctuation (each such mapping is reported).
   A row that still cannot be resolved is rejected, never dropped in silence:
   it goes to import.rejected_row with its reason. An account whose
   subsidiary_of cannot be resolved is loaded with no parent and logged as
   kind 'kept'.
3. In one transaction the four tables are emptied and refilled (keys assigned
   in file order), the import and its rejected rows are logged, and the
   transaction commits. Any failure leaves the previous contents untouched.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import hashlib
import io
import json
import re
import shlex
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import psycopg
from psycopg import conninfo

from b2bdwh import settings, source
from b2bdwh.db import CliError, connect, describe

HELP = "replace the source's contents with a folder of CRM CSV files, all or nothing"

ACCOUNTS = "accounts.csv"
PRODUCTS = "products.csv"
SALES_TEAMS = "sales_teams.csv"
PIPELINE = "sales_pipeline.csv"

# The contract's headers, in the order the files are read and reported.
FILES: dict[str, tuple[str, ...]] = {
    ACCOUNTS: (
        "account",
        "sector",
        "year_established",
        "revenue",
        "employees",
        "office_location",
        "subsidiary_of",
    ),
    PRODUCTS: ("product", "series", "sales_price"),
    SALES_TEAMS: ("sales_agent", "manager", "regional_office"),
    PIPELINE: (
        "opportunity_id",
        "sales_agent",
        "product",
        "account",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
}

INT_COLUMNS = {"year_established", "employees"}
NUMERIC_COLUMNS = {"revenue", "sales_price", "close_value"}
DATE_COLUMNS = {"engage_date", "close_date"}

INT_RE = re.compile(r"[+-]?[0-9]+")
NUMERIC_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Bytes that are not UTF-8, as decoded with errors="surrogateescape".
UNDECODABLE = re.compile("[\udc80-\udcff]")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
MAX_EXPONENT = 1000  # |exponent| of a numeric value; far beyond any amount
MAX_FRACTION_DIGITS = 16383  # digits after the decimal point PostgreSQL's numeric holds
MAX_INT_DIGITS = 10  # an integer column's longest value; longer text is out of range
# The first column of each file is a unique key in the source: a btree index entry holds
# about 2,700 bytes, so longer names and ids are refused before the database sees them.
MAX_KEY_BYTES = 2000
BOM = b"\xef\xbb\xbf"

LOG_QUERY = (
    "SELECT file_name, line_number, kind, reason, record FROM import.rejected_row "
    "WHERE import_run_id = {run_id} ORDER BY file_name, line_number;"
)


# --- malformed input ------------------------------------------------------------------------


class Problems:
    """Malformed-input errors: all are counted, the first `limit` are kept to show."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.shown: list[str] = []
        self.total = 0

    def add(self, file: str, line: int | None, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.shown) >= self.limit:
            return
        where = file
        if line is not None:
            where += f" line {line}"
        if column is not None:
            where += f", column {column}" if line is not None else f" column {column}"
        self.shown.append(f"{where}: {message}")


class MalformedInput(CliError):
    """The files cannot be imported as they are; nothing was written."""

    def __init__(self, directory: Path, problems: Problems) -> None:
        self.problems = list(problems.shown)
        self.total = problems.total
        noun = "problem" if problems.total == 1 else "problems"
        lines = [
            f"{problems.total} {noun} in {directory}; nothing was imported, "
            "the source is unchanged:"
        ]
        lines += [f"  {p}" for p in problems.shown]
        hidden = problems.total - len(problems.shown)
        if hidden:
            lines.append(
                f"  ... and {hidden} more (the first {len(problems.shown)} are shown; "
                "--max-errors N shows more)"
            )
        super().__init__("\n".join(lines))


# --- reading and checking the files ---------------------------------------------------------


@dataclass
class Record:
    """One data row: where it starts, the raw fields by column, and the typed values."""

    line: int
    raw: dict[str, str]
    values: dict[str, object]


@dataclass
class CsvFile:
    name: str
    records: list[Record]
    size: int
    sha256: str


def show(value: str, limit: int = 60) -> str:
    """A field value quoted for a message, shortened when long."""
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return repr(value)


def convert(column: str, text: str) -> tuple[object, str | None]:
    """A trimmed, non-empty field as the source column's type: (value, error or None)."""
    if column in INT_COLUMNS:
        if not INT_RE.fullmatch(text):
            return None, f"{show(text)} is not a whole number"
        if len(text.lstrip("+-").lstrip("0")) > MAX_INT_DIGITS:  # int() refuses 4,300 digits
            return None, f"{show(text)} is out of range for an integer column"
        number = int(text)
        if not INT_MIN <= number <= INT_MAX:
            return None, f"{show(text)} is out of range for an integer column"
        return number, None
    if column in NUMERIC_COLUMNS:
        if not NUMERIC_RE.fullmatch(text):
            return None, f"{show(text)} is not a number"
        try:
            number = Decimal(text)
        except InvalidOperation:  # the form is right: the exponent is too large
            return None, f"{show(text)} is out of range for a numeric column"
        if abs(number.adjusted()) > MAX_EXPONENT:
            return None, f"{show(text)} is out of range for a numeric column"
        fraction_digits = -int(number.as_tuple().exponent)
        if fraction_digits > MAX_FRACTION_DIGITS:
            return None, (
                f"{show(text)} has {fraction_digits} digits after the decimal point; "
                f"a numeric column holds at most {MAX_FRACTION_DIGITS}"
            )
        return number, None
    if column in DATE_COLUMNS:
        if not DATE_RE.fullmatch(text):
            return None, f"{show(text)} is not a date in YYYY-MM-DD form"
        try:
            return date.fromisoformat(text), None
        except ValueError:
            return None, f"{show(text)} is not a valid date"
    return text, None


def header_problems(name: str, header: list[str], problems: Problems) -> bool:
    """Check the header line against the contract; True when it can be used.

    Columns may come in any order (they are matched by name), but each of the
    contract's columns must be there exactly once and no other column may be.
    """
    expected = FILES[name]
    wanted = ",".join(expected)
    ok = True
    seen: set[str] = set()
    for column in header:
        column = column.strip()
        if column in seen:
            problems.add(name, 1, column, f"duplicate column in the header; expected: {wanted}")
            ok = False
        elif column not in expected:
            shown = column or "(empty)"
            problems.add(name, 1, shown, f"unexpected column in the header; expected: {wanted}")
            ok = False
        seen.add(column)
    for column in expected:
        if column not in seen:
            problems.add(name, 1, column, f"missing from the header; expected: {wanted}")
            ok = False
    return ok


def field_encoding_problems(
    name: str, line: int, header: list[str], fields: list[str], problems: Problems
) -> bool:
    """Report fields holding bytes that are not UTF-8 (or NUL); True when there were any."""
    found = False
    for index, value in enumerate(fields):
        column = f"#{index + 1}" if line == 1 or index >= len(header) else header[index]
        if match := UNDECODABLE.search(value):
            byte = ord(match.group()) - 0xDC00
            problems.add(
                name,
                line,
                column,
                f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8",
            )
            found = True
        elif "\x00" in value:
            problems.add(name, line, column, "contains a NUL character")
            found = True
    return found


def read_csv(directory: Path, name: str, problems: Problems) -> CsvFile | None:
    """Read and check one file. Problems go to `problems`; None when it is unusable."""
    path = directory / name
    if not path.is_file():
        problems.add(name, None, None, f"missing file (expected {path})")
        return None
    data = path.read_bytes()
    size, digest = len(data), hashlib.sha256(data).hexdigest()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    text = data.decode("utf-8", errors="surrogateescape")
    suspicious = bool(UNDECODABLE.search(text)) or "\x00" in text
    if not text.strip():
        problems.add(
            name, 1, None, f"the file is empty; expected the header {','.join(FILES[name])}"
        )
        return None

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[Record] = []
    previous_line = 0
    try:
        header = [column.strip() for column in next(reader)]
        if suspicious and field_encoding_problems(name, 1, header, header, problems):
            return None
        if not header_problems(name, header, problems):
            return None
        width = len(header)
        header_key = FILES[name][0]
        previous_line = reader.line_num
        for fields in reader:
            line = previous_line + 1  # where this record starts (it may span lines)
            previous_line = reader.line_num
            if not fields:
                continue  # a blank line is not a row
            if suspicious and field_encoding_problems(name, line, header, fields, problems):
                continue
            if len(fields) != width:
                if len(fields) < width:
                    missing = ",".join(header[len(fields) :])
                    problems.add(
                        name,
                        line,
                        header[len(fields)],
                        f"missing; the row has {len(fields)} fields, the header has {width} "
                        f"(no value for {missing})",
                    )
                else:
                    problems.add(
                        name,
                        line,
                        None,
                        f"the row has {len(fields)} fields, the header has {width} "
                        "(an unquoted comma in a value?)",
                    )
                continue
            raw = dict(zip(header, fields, strict=True))
            values: dict[str, object] = {}
            for column, value in raw.items():
                value = value.strip()
                if not value:
                    values[column] = None
                    continue
                typed, error = convert(column, value)
                size = len(value.encode("utf-8", errors="surrogateescape"))
                if column == header_key and size > MAX_KEY_BYTES:
                    error = (
                        f"{show(value)} is {size} bytes long; a {column} is a unique key "
                        f"and may be at most {MAX_KEY_BYTES} bytes"
                    )
                if error:
                    problems.add(name, line, column, error)
                values[column] = typed
            records.append(Record(line, raw, values))
    except csv.Error as exc:
        # Name the line where the broken record starts (an unclosed quote makes the
        # parser read on to a much later line before it gives up).
        start = previous_line + 1
        where = f" (read on to line {reader.line_num})" if reader.line_num > start else ""
        problems.add(name, start, None, f"malformed CSV in the record starting here{where}: {exc}")
        return None
    if not records:
        problems.add(
            name,
            2,
            None,
            "no rows after the header; an import replaces everything, so an empty file is refused",
        )
        return None
    return CsvFile(name, records, size, digest)


def read_all(directory: Path, max_errors: int) -> dict[str, CsvFile]:
    """Read and check the four files; raises MalformedInput listing every problem found."""
    if not directory.is_dir():
        raise CliError(f"{directory}: no such directory")
    problems = Problems(max_errors)
    files = {name: read_csv(directory, name, problems) for name in FILES}
    if problems.total:
        raise MalformedInput(directory, problems)
    return {name: f for name, f in files.items() if f is not None}


# --- resolving names ------------------------------------------------------------------------


def normalise(name: str) -> str:
    """The key names are compared by: case folded, only letters and digits kept."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


@dataclass
class Issue:
    """A row that was rejected (not loaded) or kept with a field left NULL."""

    file: str
    line: int
    kind: str  # 'rejected' or 'kept'
    code: str
    reason: str
    raw: dict[str, str]


@dataclass
class FileReport:
    read: int = 0
    loaded: int = 0
    normalised: int = 0
    rejected: int = 0
    kept: int = 0
    size: int = 0
    sha256: str = ""


class Names:
    """The names of one dimension file and the ids they were given."""

    def __init__(self, file: str, column: str) -> None:
        self.file = file
        self.column = column
        self.exact: dict[str, tuple[int, int]] = {}  # name -> (id, line)
        self.by_key: dict[str, tuple[int, str, int]] = {}  # key -> (id, name, line)

    def claim(self, name: str, line: int) -> tuple[str, str] | None:
        """Why `name` cannot be a new entity ((code, reason)), or None when it can."""
        if name in self.exact:
            first = self.exact[name][1]
            return "duplicate_name", f"duplicate {self.column} {show(name)} (first on line {first})"
        key = normalise(name)
        if key and key in self.by_key:
            _, kept, first = self.by_key[key]
            return (
                "duplicate_normalised_name",
                f"{self.column} {show(name)} is the same name as {show(kept)} on line {first} "
                "once case, white space and punctuation are ignored; the first is kept",
            )
        return None

    def add(self, name: str, entity_id: int, line: int) -> None:
        self.exact[name] = (entity_id, line)
        key = normalise(name)
        if key:
            self.by_key.setdefault(key, (entity_id, name, line))

    def resolve(self, name: str) -> tuple[int, str | None] | None:
        """(id, the kept name when matched by normalisation else None), or None if unknown."""
        if name in self.exact:
            return self.exact[name][0], None
        key = normalise(name)
        if key and key in self.by_key:
            entity_id, kept, _ = self.by_key[key]
            return entity_id, kept
        return None


@dataclass
class Plan:
    """Everything an import writes, and what to tell the user about it."""

    directory: Path
    rows: dict[str, list[tuple[object, ...]]]
    issues: list[Issue]
    files: dict[str, FileReport]
    mappings: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    ignored: list[str] = field(default_factory=list)


def text(record: Record, column: str) -> str | None:
    value = record.values[column]
    return value if isinstance(value, str) else None


def load_dimension(
    csv_file: CsvFile, names: Names, report: FileReport, issues: list[Issue]
) -> list[tuple[int, str, Record]]:
    """Give each new name an id in file order; reject empty and duplicate names.

    Returns (id, name, record) of the rows to load.
    """
    loaded = []
    for record in csv_file.records:
        name = text(record, names.column)
        problem = ("empty_name", f"no {names.column} name") if name is None else None
        if name is not None:
            problem = names.claim(name, record.line)
        if problem or name is None:
            assert problem is not None
            issues.append(Issue(csv_file.name, record.line, "rejected", *problem, record.raw))
            report.rejected += 1
            continue
        entity_id = len(loaded) + 1
        names.add(name, entity_id, record.line)
        loaded.append((entity_id, name, record))
    report.loaded = len(loaded)
    return loaded


def plan_import(directory: Path, files: dict[str, CsvFile]) -> Plan:
    """Resolve names and decide, row by row, what is loaded and what is logged."""
    reports = {
        name: FileReport(read=len(f.records), size=f.size, sha256=f.sha256)
        for name, f in files.items()
    }
    issues: list[Issue] = []
    mappings: Counter[tuple[str, str, str, str]] = Counter()

    def note_mapping(file: str, column: str, given: str, kept: str | None) -> bool:
        if kept is None:
            return False
        mappings[(file, column, given, kept)] += 1
        return True

    accounts = Names(ACCOUNTS, "account")
    account_rows = []
    # Parents are resolved once every account has its id: a parent may come later.
    for entity_id, name, r in load_dimension(files[ACCOUNTS], accounts, reports[ACCOUNTS], issues):
        parent_id = None
        parent = text(r, "subsidiary_of")
        found = accounts.resolve(parent) if parent is not None else None
        if parent is not None and found is None:
            issues.append(
                Issue(
                    ACCOUNTS,
                    r.line,
                    "kept",
                    "unknown_parent",
                    f"subsidiary_of {show(parent)} is not an account in {ACCOUNTS}; "
                    "loaded with no parent",
                    r.raw,
                )
            )
            reports[ACCOUNTS].kept += 1
        elif parent is not None and found is not None:
            parent_id = found[0]
            if note_mapping(ACCOUNTS, "subsidiary_of", parent, found[1]):
                reports[ACCOUNTS].normalised += 1
        v = r.values
        account_rows.append(
            (
                entity_id,
                name,
                v["sector"],
                v["year_established"],
                v["revenue"],
                v["employees"],
                v["office_location"],
                parent_id,
            )
        )

    products = Names(PRODUCTS, "product")
    product_rows = [
        (i, name, r.values["series"], r.values["sales_price"])
        for i, name, r in load_dimension(files[PRODUCTS], products, reports[PRODUCTS], issues)
    ]
    agents = Names(SALES_TEAMS, "sales_agent")
    agent_rows = [
        (i, name, r.values["manager"], r.values["regional_office"])
        for i, name, r in load_dimension(files[SALES_TEAMS], agents, reports[SALES_TEAMS], issues)
    ]

    pipeline_rows = []
    first_line: dict[str, int] = {}
    report = reports[PIPELINE]
    references = (
        ("sales_agent", agents, SALES_TEAMS, True),
        ("product", products, PRODUCTS, True),
        ("account", accounts, ACCOUNTS, False),
    )
    for record in files[PIPELINE].records:
        problems: list[tuple[str, str]] = []
        opportunity = text(record, "opportunity_id")
        if opportunity is None:
            problems.append(("empty_opportunity_id", "no opportunity_id"))
        elif opportunity in first_line:
            problems.append(
                (
                    "duplicate_opportunity_id",
                    f"duplicate opportunity_id {show(opportunity)} "
                    f"(first on line {first_line[opportunity]})",
                )
            )
        else:
            first_line[opportunity] = record.line
        ids: dict[str, int | None] = {}
        matched: list[tuple[str, str, str]] = []
        for column, names, file, required in references:
            given = text(record, column)
            ids[column] = None
            if given is None:
                if required:
                    problems.append((f"empty_{column}", f"no {column}"))
                continue
            found = names.resolve(given)
            if found is None:
                problems.append((f"unknown_{column}", f"{column} {show(given)} is not in {file}"))
                continue
            ids[column] = found[0]
            if found[1] is not None:
                matched.append((column, given, found[1]))
        if text(record, "deal_stage") is None:
            problems.append(("empty_deal_stage", "no deal_stage"))
        if problems:
            issues.append(
                Issue(
                    PIPELINE,
                    record.line,
                    "rejected",
                    problems[0][0],
                    "; ".join(reason for _, reason in problems),
                    record.raw,
                )
            )
            report.rejected += 1
            continue
        for column, given, kept in matched:
            note_mapping(PIPELINE, column, given, kept)
        if matched:
            report.normalised += 1
        v = record.values
        pipeline_rows.append(
            (
                opportunity,
                ids["sales_agent"],
                ids["product"],
                ids["account"],
                v["deal_stage"],
                v["engage_date"],
                v["close_date"],
                v["close_value"],
            )
        )
    report.loaded = len(pipeline_rows)

    ignored = sorted(
        p.name for p in directory.iterdir() if p.name not in FILES and not p.name.startswith(".")
    )
    return Plan(
        directory=directory,
        rows={
            "accounts": account_rows,
            "products": product_rows,
            "sales_agents": agent_rows,
            "sales_pipeline": pipeline_rows,
        },
        issues=sorted(issues, key=lambda i: (list(FILES).index(i.file), i.line)),
        files=reports,
        mappings=mappings,
        ignored=ignored,
    )


# --- the summary ----------------------------------------------------------------------------


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def reason_counts(plan: Plan) -> list[tuple[str, str, str, int]]:
    """(file, kind, reason, rows) for each distinct reason, files in order, most rows first."""
    counts = Counter((i.file, i.kind, i.reason) for i in plan.issues)
    order = list(FILES)
    return [
        (f, k, r, n)
        for (f, k, r), n in sorted(counts.items(), key=lambda x: (order.index(x[0][0]), -x[1]))
    ]


def summary_json(plan: Plan, counts_after: dict[str, int] | None) -> dict[str, object]:
    return {
        "files": {
            name: {
                "read": r.read,
                "loaded": r.loaded,
                "normalised": r.normalised,
                "rejected": r.rejected,
                "kept": r.kept,
                "bytes": r.size,
                "sha256": r.sha256,
            }
            for name, r in plan.files.items()
        },
        "mappings": [
            {"file": f, "column": c, "from": g, "to": k, "rows": n}
            for (f, c, g, k), n in sorted(plan.mappings.items())
        ],
        "reasons": [
            {"file": f, "kind": k, "reason": r, "rows": n} for f, k, r, n in reason_counts(plan)
        ],
        "source_counts": counts_after,
    }


def table(headers: list[str], rows: list[list[object]]) -> list[str]:
    """Rows under headers, the first column left-aligned and the others right-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [
            str(x).ljust(w) if i == 0 else str(x).rjust(w)
            for i, (x, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def format_summary(
    plan: Plan,
    *,
    headline: str,
    run_id: int | None,
    dsn: str | None,
    max_reasons: int = 10,
) -> str:
    out = [headline, ""]
    numbers = {
        n: [r.read, r.loaded, r.normalised, r.rejected, r.kept] for n, r in plan.files.items()
    }
    totals = [sum(column) for column in zip(*numbers.values(), strict=True)]
    out += table(
        ["file", "read", "loaded", "by normalised name", "rejected", "kept with issue"],
        [*([name, *row] for name, row in numbers.items()), ["total", *totals]],
    )
    if plan.mappings:
        out += ["", "Names matched only once case, white space and punctuation are ignored:"]
        for (file, column, given, kept), n in sorted(plan.mappings.items()):
            out.append(f"  {file} {column}: {show(given)} -> {show(kept)} ({plural(n, 'row')})")
    reasons = reason_counts(plan)
    for kind, title in (
        ("rejected", "Rejected rows (not loaded), by reason:"),
        ("kept", "Rows loaded with an issue, by reason:"),
    ):
        for file in FILES:
            mine = [(reason, n) for f, k, reason, n in reasons if f == file and k == kind]
            if not mine:
                continue
            if title:
                out += ["", title]
                title = ""
            out.append(f"  {file}:")
            for reason, n in mine[:max_reasons]:
                out.append(f"    {n:>6}  {reason}")
            if len(mine) > max_reasons:
                rest = sum(n for _, n in mine[max_reasons:])
                out.append(
                    f"    ... {plural(len(mine) - max_reasons, 'more reason')} "
                    f"({plural(rest, 'row')})"
                )
    out.append("")
    if not plan.issues:
        out.append("No row was rejected or loaded with an issue.")
    elif run_id is not None and dsn is not None:
        query = LOG_QUERY.format(run_id=run_id)
        out += [
            f"The rows above are in import.rejected_row, import_run_id = {run_id}. To see them:",
            f"  psql {shlex.quote(dsn)} -c {shlex.quote(query)}",
        ]
    if plan.ignored:
        out.append(f"Not read (not one of the four files): {', '.join(plan.ignored)}")
    return "\n".join(out)


# --- writing --------------------------------------------------------------------------------


def os_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        return None


def public_dsn(dsn: str) -> str:
    """The connection string without a password, to print."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return dsn
    params.pop("password", None)
    return conninfo.make_conninfo(**params)


def check_schema(conn: psycopg.Connection, where: str) -> None:
    needed = ["import.import_run", "import.rejected_row"]
    needed += [f"public.{t}" for t in source.SOURCE_TABLES]
    missing = [
        name
        for name in needed
        if (row := conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()) is None
        or row[0] is None
    ]
    if missing:
        raise CliError(
            f"{where} lacks {', '.join(missing)}; run `b2bdwh migrate --target oltp` first. "
            "Nothing was imported."
        )


def write(
    plan: Plan, dsn: str, *, started_at: datetime, lock_timeout: float
) -> tuple[int, dict[str, int]]:
    """Replace the source's contents and log the import, in one transaction."""
    where = describe(dsn)
    with connect(dsn) as conn:
        check_schema(conn, where)
        conn.commit()
        try:
            with conn.transaction():
                # 0 waits as long as it takes, as lock_timeout = 0 does.
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    (f"{max(int(lock_timeout * 1000), 0)}ms",),
                )
                source.truncate_source(conn)
                for table_name in source.SOURCE_TABLES:
                    source.copy_rows(conn, table_name, plan.rows[table_name])
                source.resync_identities(conn)
                after = source.counts(conn)
                expected = {t: len(rows) for t, rows in plan.rows.items()}
                if after != expected:
                    raise CliError(
                        f"{where}: after loading, the source holds {after} rows, not "
                        f"{expected}; something else writes to it. Nothing was imported."
                    )
                row = conn.execute(
                    """INSERT INTO import.import_run
                           (directory, started_at, finished_at, os_user, run_summary)
                       VALUES (%s, %s, clock_timestamp(), %s, %s)
                       RETURNING import_run_id""",
                    (
                        str(plan.directory),
                        started_at,
                        os_user(),
                        json.dumps(summary_json(plan, after), ensure_ascii=False),
                    ),
                ).fetchone()
                assert row is not None
                run_id = int(row[0])
                with conn.cursor().copy(
                    "COPY import.rejected_row (import_run_id, file_name, line_number, kind, "
                    "reason_code, reason, record) FROM STDIN"
                ) as copy:
                    for issue in plan.issues:
                        copy.write_row(
                            (
                                run_id,
                                issue.file,
                                issue.line,
                                issue.kind,
                                issue.code,
                                issue.reason,
                                json.dumps(issue.raw, ensure_ascii=False),
                            )
                        )
        except psycopg.errors.LockNotAvailable as exc:
            raise CliError(
                f"{where}: the source tables stayed locked by another session for "
                f"{lock_timeout:g}s (a long query or transaction?); nothing was imported, "
                "the source is unchanged. Try again, or raise --lock-timeout."
            ) from exc
        except psycopg.Error as exc:
            message = (exc.diag.message_primary or str(exc)).strip()
            raise CliError(
                f"{where}: the import failed: {message} (SQLSTATE {exc.sqlstate or '?'}); "
                "nothing was imported, the source is unchanged"
            ) from exc
    return run_id, after


# --- entry points ---------------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    run_id: int | None
    summary: str
    seconds: float


def import_directory(
    directory: Path | str,
    dsn: str,
    *,
    max_errors: int = 20,
    lock_timeout: float = 30.0,
    dry_run: bool = False,
) -> Result:
    """Check the folder and, unless dry_run, replace the source's contents with it."""
    directory = Path(directory).resolve()
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    files = read_all(directory, max_errors)
    plan = plan_import(directory, files)
    checked = time.monotonic() - clock
    if dry_run:
        headline = (
            f"Checked {directory} in {checked:.2f} s: it can be imported "
            "(--dry-run: nothing was written)."
        )
        return Result(
            plan, None, format_summary(plan, headline=headline, run_id=None, dsn=None), checked
        )
    run_id, _ = write(plan, dsn, started_at=started_at, lock_timeout=lock_timeout)
    seconds = time.monotonic() - clock
    headline = (
        f"Imported {directory} into {describe(dsn)}: import id {run_id}.\n"
        f"The source's previous contents were replaced, in {seconds:.2f} s "
        f"(checked in {checked:.2f} s, written in {seconds - checked:.2f} s)."
    )
    summary = format_summary(plan, headline=headline, run_id=run_id, dsn=public_dsn(dsn))
    return Result(plan, run_id, summary, seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        help="folder with " + ", ".join(FILES) + " (headers as in the contract)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read, check and resolve the files and print the summary; write nothing",
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        default=20,
        metavar="N",
        help="how many malformed-input errors to show (default 20; all are counted)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for sessions using the source tables (default 30; 0: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    result = import_directory(
        args.directory,
        settings.oltp_dsn(),
        max_errors=args.max_errors,
        lock_timeout=args.lock_timeout,
        dry_run=args.dry_run,
    )
    print(result.summary)
    return 0
