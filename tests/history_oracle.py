"""A replay oracle for dwh.fact_deal_history, independent of its SQL.

`expected_history` computes, in Python, the history a warehouse must hold: the seed of its
latest initial load (from the deals the source held then, which the caller captured with
`source_deals` right after that load), then every committed source transaction after that
load's snapshot, read from cdc.change_log (the deals' row images), in changed_at order:

- one event per (deal, transaction) at its last changed_at, with its last image; the deal
  exists after it as its inserts and deletes counted say (no insert or delete: it does;
  they net out: as before); after the deal's last transaction, exactly when the source
  holds it now (the warehouse's last window saw the source as it is);
- a deal lives in sales_pipeline or in the CRM's archive of closed deals
  (public.sales_pipeline_archive): the archive's changes are the deal's, so archiving (a D
  of sales_pipeline and an I of the archive in one transaction) nets out, a move that leaves
  the deal as it was, and a DELETE from the archive removes it. Counting inserts and deletes
  over both tables gives the deal's presence only while no key is in both at once (the
  source allows it; the model-based test never makes it);
- a value no column holds (NaN, beyond numeric(18, 2)) makes the deal absent (quarantine);
- an event is compared with the deal's previous event, or, for its first one, with the
  seeded row in effect at its time; it makes a row when it brings the deal back or alters
  stage, agent, product (by id), account or value, and it closes the row in effect when
  it removes the deal; applying it cuts the history at its time (later rows give way).

`actual_history` reads the warehouse's rows (dwh.v_deal_history: the table and the seed) in the
same shape: {(opportunity_id,
valid_from): (valid_to, stage, agent_id, product_id, account_id, close_value,
entered_stage)}, times as microseconds since the epoch (None for infinity).
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import psycopg

from b2bdwh.compare import SOURCE_DEAL_ROWS

EPOCH = date(1970, 1, 1)
DAY = 86_400_000_000
STAGES = ("Prospecting", "Engaging", "Won", "Lost")
CLOSED = {"Won", "Lost"}

Row = tuple  # (valid_to, stage, agent_id, product_id, account_id, close_value, entered)


def micros(day: date) -> int:
    return (day - EPOCH).days * DAY


def match_key(name: str | None) -> str | None:
    if name is None:
        return None
    folded = unicodedata.normalize("NFKC", name).lower()
    return "".join(ch for ch in folded if ch.isalnum())


def stage_of(name: str | None) -> str:
    if name in STAGES:
        return name
    for stage in STAGES:
        if match_key(stage) == match_key(name):
            return stage
    return "Unknown"


def value_of(raw: Any) -> tuple[bool, Decimal | None]:
    """(storable, value rounded as numeric(18, 2) rounds it)."""
    if raw is None:
        return True, None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return False, None
    if value.is_nan() or value.is_infinite():
        return False, None
    rounded = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return abs(rounded) < Decimal("1e16"), rounded


def day_of(raw: Any, low: date, high: date) -> date | None:
    if raw is None:
        return None
    day = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
    return day if low <= day <= high else None


@dataclass
class Calendar:
    low: date
    high: date


def tracked(deal: dict) -> tuple[bool, tuple]:
    """(storable, (stage, agent_id, product_id, account_id, close_value)) of a deal row."""
    storable, value = value_of(deal.get("close_value"))
    return storable, (
        stage_of(deal.get("deal_stage")),
        deal.get("sales_agent_id"),
        deal.get("product_id"),
        deal.get("account_id"),
        value,
    )


# The source's deals: sales_pipeline's, and the archived ones it does not hold.
DEALS_QUERY = f"SELECT d.opportunity_id, to_jsonb(d) FROM ({SOURCE_DEAL_ROWS}) AS d"


def source_deals(oltp_dsn: str) -> dict[str, dict]:
    """The source's deals now (archived ones included), by opportunity_id: capture them right
    after an initial load."""
    with psycopg.connect(oltp_dsn) as conn:
        return {r[0]: r[1] for r in conn.execute(DEALS_QUERY).fetchall()}


def seed(deals: dict[str, dict], snapshot_at: int, cal: Calendar) -> dict[str, list[list]]:
    """The initial load's rows per deal: [valid_from, valid_to, attrs, entered]."""
    out: dict[str, list[list]] = {}
    for key, deal in deals.items():
        storable, attrs = tracked(deal)
        if not storable:
            continue
        engage = day_of(deal.get("engage_date"), cal.low, cal.high)
        close = day_of(deal.get("close_date"), cal.low, cal.high)
        engaged_at = micros(engage) if engage else None
        closed_at = micros(close) if close else snapshot_at
        rows: list[list] = []
        if attrs[0] in CLOSED:
            if engaged_at is not None and engaged_at < closed_at:
                rows.append([engaged_at, closed_at, ("Engaging", *attrs[1:4], None), True])
            rows.append([closed_at, None, attrs, True])
        else:
            rows.append([engaged_at if engaged_at is not None else snapshot_at, None, attrs, True])
        out[key] = rows
    return out


def _in_effect(rows: list[list], at: int) -> list | None:
    """The row in effect at `at`, else the first one after it (a seed row from the
    snapshot time, which a transaction committed after the snapshot may precede)."""
    later = [r for r in rows if r[1] is None or at < r[1]]
    return min(later, key=lambda r: r[0]) if later else None


# A deal's changes: sales_pipeline's and the archive's (archiving is a D here and an I there in
# one transaction: a move, not a change of the deal; a restore the other way round).
CHANGE_QUERY = """SELECT change_id, row_key, txid::text, operation, row_data,
                         (extract(epoch FROM changed_at) * 1e6)::bigint
                    FROM cdc.change_log
                   WHERE table_name IN ('sales_pipeline', 'sales_pipeline_archive')
                     AND row_key IS NOT NULL"""


class ChangeRecorder:
    """The source's deal changes, kept as they are seen: a source that purges its change
    log (change_retention 0) would otherwise lose what the replay needs. Call `record`
    before every run that may purge."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple] = {}

    def record(self, oltp_dsn: str) -> None:
        with psycopg.connect(oltp_dsn) as conn:
            for row in conn.execute(CHANGE_QUERY).fetchall():
                self.rows.setdefault(row[0], row)

    def clear(self) -> None:
        self.rows.clear()


def visible(txid: int, snapshot: str) -> bool:
    """pg_visible_in_snapshot(txid, snapshot) for a committed transaction."""
    xmin, xmax, xip = snapshot.split(":")
    in_progress = {int(x) for x in xip.split(",") if x}
    return txid < int(xmin) or (txid < int(xmax) and txid not in in_progress)


def expected_history(
    oltp_dsn: str,
    olap_dsn: str,
    initial_deals: dict[str, dict],
    recorded: ChangeRecorder | None = None,
) -> dict[tuple, Row]:
    """The replay: `initial_deals` are the source's deals at the latest initial load
    (source_deals right after it); the changes come from `recorded`, else from the source's
    change log as it is now."""
    with psycopg.connect(olap_dsn) as conn:
        snapshot, snapshot_at = conn.execute(
            "SELECT source_snapshot::text, (extract(epoch FROM source_snapshot_at) * 1e6)::bigint"
            "  FROM etl.run WHERE pipeline = 'initial_load' AND status = 'succeeded'"
            " ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        low, high = conn.execute(
            "SELECT (SELECT value FROM etl.config WHERE key = 'date_min')::date,"
            "       (SELECT value FROM etl.config WHERE key = 'date_max')::date"
        ).fetchone()
    cal = Calendar(low, high)
    history = seed(initial_deals, snapshot_at, cal)

    if recorded is None:
        recorded = ChangeRecorder()
        recorded.record(oltp_dsn)
    changes = [
        (key, txid, op, image, at, change_id)
        for change_id, key, txid, op, image, at in sorted(recorded.rows.values())
        if not visible(int(txid), snapshot)
    ]
    with psycopg.connect(oltp_dsn) as conn:
        # as the window's last snapshot holds them (an archived deal's references as they are)
        now = {r[0]: r[1] for r in conn.execute(DEALS_QUERY).fetchall()}

    # One event per (deal, transaction).
    events: dict[tuple, dict] = {}
    for key, txid, op, image, at, change_id in changes:
        e = events.setdefault(
            (key, txid), {"delta": 0, "moves": False, "image": None, "at": at, "change": change_id}
        )
        e["delta"] += {"I": 1, "D": -1}.get(op, 0)
        e["moves"] = e["moves"] or op in ("I", "D")
        if op != "D" and change_id >= e.get("image_change", -1):
            e["image"], e["image_change"] = image, change_id
        e["at"], e["change"] = max(e["at"], at), max(e["change"], change_id)
    per_deal: dict[str, list[dict]] = defaultdict(list)
    for (key, _txid), e in events.items():
        per_deal[key].append(e)

    for key, deal_events in per_deal.items():
        deal_events.sort(key=lambda e: (e["at"], e["change"]))
        rows = history.setdefault(key, [])
        present = None  # unknown before the first event: as the row in effect says
        last_move = None
        before: tuple | None = None  # (present, attrs) of the previous event
        for i, e in enumerate(deal_events):
            if e["delta"] != 0:
                last_move = e["delta"] > 0
            if i == len(deal_events) - 1:
                row = now.get(key)
                exists, image = row is not None, row
            else:
                image = e["image"]
                if last_move is not None:
                    exists = last_move
                elif not e["moves"]:
                    exists = True
                else:
                    exists = (
                        present
                        if present is not None
                        else any(r[1] is None or r[1] >= e["at"] for r in rows)
                    )
            storable, attrs = tracked(image) if image is not None else (False, None)
            now_present = exists and storable
            if before is None:
                prev = _in_effect(rows, e["at"])
                before = (prev is not None, prev[2] if prev else None)
            was_present, was_attrs = before
            keep = (was_present and not now_present) or (
                now_present and (not was_present or attrs != was_attrs)
            )
            if keep:
                at = e["at"]
                kept = [r for r in rows if r[0] < at]
                for r in kept:
                    if r[1] is None or r[1] > at:
                        r[1] = at
                if now_present:
                    entered = not was_present or was_attrs[0] != attrs[0]
                    kept.append([at, None, attrs, entered])
                rows[:] = kept
            present = exists
            before = (now_present, attrs if now_present else None)

    return {(key, r[0]): (r[1], *r[2], r[3]) for key, rows in history.items() for r in rows}


def actual_history(olap_dsn: str) -> dict[tuple, Row]:
    with psycopg.connect(olap_dsn) as conn:
        rows = conn.execute(
            # (the view as a CTE: on Citus its UNION ALL of distributed tables joins
            # reference tables only so; docs/scaling.md)
            """WITH h AS MATERIALIZED (SELECT * FROM dwh.v_deal_history)
               SELECT h.opportunity_id, (extract(epoch FROM h.valid_from) * 1e6)::bigint,
                      CASE WHEN h.valid_to <> 'infinity'
                           THEN (extract(epoch FROM h.valid_to) * 1e6)::bigint END,
                      s.deal_stage_name, g.sales_agent_id, p.product_id, a.account_id,
                      h.close_value, h.entered_stage
                 FROM h
                 JOIN dwh.dim_deal_stage AS s USING (deal_stage_key)
                 JOIN dwh.dim_sales_agent AS g USING (sales_agent_key)
                 JOIN dwh.dim_product AS p USING (product_key)
                 JOIN dwh.dim_account AS a USING (account_key)"""
        ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def history_differences(olap_dsn: str, expected: dict[tuple, Row], limit: int = 12) -> list[str]:
    actual = actual_history(olap_dsn)
    problems = []
    for key in sorted(set(actual) | set(expected), key=str):
        a, e = actual.get(key), expected.get(key)
        if a != e:
            problems.append(f"{key}: warehouse {a}, replay {e}")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... {len(problems) - limit} more"]
    return problems


# The as-of summaries recomputed from dwh.v_deal_history by their definitions (each query
# gives (key..., value...) rows of the non-zero groups; the tables may keep zero rows). The
# view is read into a materialised CTE first: on Citus its UNION ALL of distributed tables
# joins nothing else in one query (docs/scaling.md).
SUMMARY_QUERIES = {
    "pipeline_day": (
        """SELECT day, deal_stage_key, sales_agent_key, product_id, sum(deals), sum(open_value)
             FROM dwh.deal_pipeline_day GROUP BY 1, 2, 3, 4
           HAVING sum(deals) <> 0 OR sum(open_value) <> 0""",
        """WITH h AS MATERIALIZED (SELECT * FROM dwh.v_deal_history WHERE NOT is_closed)
           SELECT d.day, h.deal_stage_key, h.sales_agent_key, coalesce(p.product_id, -1),
                  sum(d.sign), sum(d.sign * coalesce(p.sales_price, 0))
             FROM h
             LEFT JOIN dwh.dim_product AS p USING (product_key)
            CROSS JOIN LATERAL (VALUES ((h.valid_from AT TIME ZONE 'UTC')::date, 1),
                                       (CASE WHEN h.valid_to <> 'infinity'
                                             THEN (h.valid_to AT TIME ZONE 'UTC')::date END, -1))
                  AS d (day, sign)
            WHERE NOT h.is_closed AND d.day IS NOT NULL
            GROUP BY 1, 2, 3, 4
           HAVING sum(d.sign) <> 0 OR sum(d.sign * coalesce(p.sales_price, 0)) <> 0""",
    ),
    "pipeline_month": (
        """SELECT month, deal_stage_key, sales_agent_key, product_id, sum(deals), sum(open_value)
             FROM dwh.deal_pipeline_month GROUP BY 1, 2, 3, 4
           HAVING sum(deals) <> 0 OR sum(open_value) <> 0""",
        """SELECT date_trunc('month', day)::date, deal_stage_key, sales_agent_key, product_id,
                  sum(deals), sum(open_value)
             FROM dwh.deal_pipeline_day GROUP BY 1, 2, 3, 4
           HAVING sum(deals) <> 0 OR sum(open_value) <> 0""",
    ),
    "conversion": (
        """SELECT entry_month, from_stage_key, to_stage_key, sum(deals)
             FROM dwh.deal_stage_conversion GROUP BY 1, 2, 3 HAVING sum(deals) <> 0""",
        """WITH e AS MATERIALIZED (
               SELECT opportunity_id, valid_from, deal_stage_key FROM dwh.v_deal_history
                WHERE entered_stage)
           SELECT m, f, t, count(*) FROM (
               SELECT date_trunc('month', e.valid_from AT TIME ZONE 'UTC')::date AS m,
                      e.deal_stage_key AS f, e.deal_stage_key AS t FROM e
               UNION ALL
               SELECT DISTINCT ON (e.opportunity_id, e.valid_from, l.deal_stage_key)
                      date_trunc('month', e.valid_from AT TIME ZONE 'UTC')::date,
                      e.deal_stage_key, l.deal_stage_key
                 FROM e JOIN e AS l ON l.opportunity_id = e.opportunity_id
                  AND l.valid_from > e.valid_from AND l.deal_stage_key <> e.deal_stage_key) AS x
            GROUP BY 1, 2, 3""",
    ),
}


def summary_differences(olap_dsn: str, limit: int = 8) -> list[str]:
    """Each as-of summary against its recomputation from dwh.v_deal_history."""
    problems: list[str] = []
    with psycopg.connect(olap_dsn) as conn:
        for name, (stored_sql, recomputed_sql) in SUMMARY_QUERIES.items():
            stored = {
                r[:-2] if name.startswith("pipeline") else r[:-1]: r
                for r in conn.execute(stored_sql).fetchall()
            }
            recomputed = {
                r[:-2] if name.startswith("pipeline") else r[:-1]: r
                for r in conn.execute(recomputed_sql).fetchall()
            }
            for key in sorted(set(stored) | set(recomputed), key=str):
                if stored.get(key) != recomputed.get(key):
                    problems.append(
                        f"{name} {key}: stored {stored.get(key)}, recomputed {recomputed.get(key)}"
                    )
    if len(problems) > limit:
        problems = [*problems[:limit], f"... {len(problems) - limit} more"]
    return problems
