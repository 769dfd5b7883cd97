"""Callers of the pipeline started together: two or four `CALL etl.run_incremental_update()`,
and a mix with `CALL etl.run_initial_load()`, on real connections released at once through a
barrier, round after round with a few source changes committed between rounds.

The contract: two runs never interleave; a second concurrent call waits or exits with a
clear message (SQLSTATE 55P03); it never corrupts or double-applies. So in every round:
every call succeeded or failed with 55P03 (no other error); at least one succeeded; every
run the round started succeeded (a refused caller starts none, or leaves none 'running');
once all callers are done, with their sessions still open (as psql's or a pool's are), no
run is 'running' and nobody holds the pipeline lock (etl.pipeline_lock_holder() IS NULL).
At the end, after one more run, the warehouse shows what a fresh initial load of the same
source shows and keeps its own rules.

Every round is checked and the test fails at the end with the rounds that broke the
contract and how; a round that left a run 'running' is cleaned up (sessions closed, the run
abandoned) so that the next rounds still test something. CALLERS_ROUNDS changes the number
of rounds per mix.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

import dbtools
import warehouse_compare as wc
from b2bdwh import generate

SCALE = 0.02  # 176 deals, 2 accounts, 35 agents, 7 products
ROUNDS = int(os.environ.get("CALLERS_ROUNDS", "30"))
INCREMENTAL = "CALL etl.run_incremental_update()"
INITIAL = "CALL etl.run_initial_load()"
MIXES = {
    "2 incremental": [INCREMENTAL] * 2,
    "4 incremental": [INCREMENTAL] * 4,
    "incremental and initial": [INCREMENTAL, INITIAL, INCREMENTAL, INITIAL],
}


@dataclass
class Rig:
    oltp: str
    olap: str
    oracle: str


@pytest.fixture(scope="module")
def rig(warehouse: dbtools.Warehouse) -> Iterator[Rig]:
    generate.generate(warehouse.oltp_dsn, SCALE)
    name, oracle = wc.attach_warehouse(warehouse.oltp_dsn, "callers_oracle")
    wc.set_config(oracle, "consumer_name", "callers_oracle")
    wc.set_config(warehouse.olap_dsn, "change_retention", "0 seconds")
    wc.run_initial(warehouse.olap_dsn)
    yield Rig(warehouse.oltp_dsn, warehouse.olap_dsn, oracle)
    dbtools.drop_database(name)


def commit_changes(oltp: str, rng: random.Random, tag: str) -> None:
    """A few CRM transactions: a deal inserted, one moved on, one deleted; a new list price."""
    with psycopg.connect(oltp, autocommit=True) as conn:
        deals = [r[0] for r in conn.execute("SELECT opportunity_id FROM public.sales_pipeline")]
        with conn.transaction():
            conn.execute(
                "INSERT INTO public.sales_pipeline VALUES (%s, %s, %s, NULL, 'Prospecting',"
                " NULL, NULL, NULL)",
                (f"CC{tag}", rng.randint(1, 35), rng.randint(1, 7)),
            )
            conn.execute(
                "UPDATE public.sales_pipeline SET deal_stage = 'Won', engage_date = DATE"
                " '2017-03-01', close_date = DATE '2017-04-01' + %s, close_value = %s"
                " WHERE opportunity_id = %s",
                (rng.randint(0, 300), rng.randint(1, 9999), rng.choice(deals)),
            )
        with conn.transaction():
            conn.execute(
                "UPDATE public.products SET sales_price = sales_price + 1 WHERE product_id = %s",
                (rng.randint(1, 7),),
            )
            conn.execute(
                "DELETE FROM public.sales_pipeline WHERE opportunity_id = %s", (rng.choice(deals),)
            )


def clean_up(olap: str) -> None:
    """After a round that broke the contract: give up runs left 'running' (the callers'
    sessions are closed by now, so their locks are gone)."""
    for (run_id,) in wc.fetch(olap, "SELECT run_id FROM etl.run WHERE status = 'running'"):
        with contextlib.suppress(psycopg.Error):
            wc.call(olap, "CALL etl.abandon_run(%s)", (run_id,))


@pytest.mark.parametrize("mix", list(MIXES))
def test_simultaneous_callers_get_the_contract_outcome_every_round(
    rig: Rig, mix: str, request: pytest.FixtureRequest
) -> None:
    statements = MIXES[mix]
    rng = random.Random(mix)
    outcomes: Counter = Counter()
    problems: list[str] = []
    for n in range(1, ROUNDS + 1):
        commit_changes(rig.oltp, rng, f"{list(MIXES).index(mix)}-{n}")
        before = wc.scalar(rig.olap, "SELECT coalesce(max(run_id), 0) FROM etl.run")
        callers = wc.Callers(rig.olap, statements)
        try:
            described = [wc.Callers.describe(o) for o in callers.outcomes]
            held = wc.pipeline_leftovers(rig.olap)  # while the callers' sessions are open
        finally:
            callers.close()
        left = wc.pipeline_leftovers(rig.olap)
        runs = wc.fetch(
            rig.olap,
            "SELECT run_id, pipeline, status, message FROM etl.run WHERE run_id > %s"
            " ORDER BY run_id",
            (before,),
        )
        wrong: list[str] = []
        for statement, outcome, text in zip(statements, callers.outcomes, described, strict=True):
            if outcome is None:
                outcomes[f"{statement}: succeeded"] += 1
            elif outcome.sqlstate == "55P03":
                outcomes[f"{statement}: refused 55P03"] += 1
            else:
                outcomes[f"{statement}: {outcome.sqlstate}"] += 1
                wrong.append(f"{statement} failed with {text}")
        if all(o is not None for o in callers.outcomes):
            wrong.append("no caller succeeded")
        wrong += [f"with the callers' sessions open: {x}" for x in held]
        wrong += [f"after the callers' sessions closed: {x}" for x in left]
        wrong += [
            f"run {run_id} ({pipeline}) is {status}: {message}"
            for run_id, pipeline, status, message in runs
            if status != "succeeded"
        ]
        succeeded = sum(o is None for o in callers.outcomes)
        if sum(r[2] == "succeeded" for r in runs) != succeeded:
            wrong.append(f"{succeeded} calls succeeded but the round's runs are {runs}")
        if wrong:
            problems.append(f"round {n}: outcomes {described}: " + "; ".join(wrong))
            clean_up(rig.olap)
    dbtools.report(
        request,
        f"\nconcurrent callers ({mix}): {ROUNDS} rounds of {len(statements)} callers, "
        f"{len(problems)} broke the contract; outcomes: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items())),
    )

    assert not problems, f"{len(problems)} of {ROUNDS} rounds broke the contract:\n  " + (
        "\n  ".join(problems[:10])
    )
    wc.run_incremental(rig.olap)
    assert not wc.pipeline_leftovers(rig.olap), wc.pipeline_leftovers(rig.olap)
    wc.run_initial(rig.oracle)
    wc.assert_same_live_content(rig.olap, rig.oracle, rig.oltp)
    wc.assert_consistent(rig.olap)
