"""The DAGs in dags/, parsed by Airflow's DagBag: no database, no scheduler.

Every DAG file follows the house rules (STYLE.md, Airflow): it imports cleanly,
reads like configuration, and each step is one SQLExecuteQueryOperator whose SQL
is exactly `CALL <the procedure its task id names>(...)`, on the warehouse
connection, with autocommit. Task ids are the procedure names themselves
(`dwh.load_dim_account`): Airflow 3 accepts dots in task ids (only task group ids
refuse them), so the mapping is the identity. dwh_initial_load is checked against
etl.run_initial_load, the entry point whose steps it runs one task each.

Besides the CALLs, a DAG may hold only the flow-control tasks listed in CONTROL, each
an Airflow operator of the stated type with exactly the stated SQL (no Python callable
anywhere), in the stated place: the initial load's sensor etl.pipeline_idle before
etl.start_run; the incremental update's branch run_started right after it, to the
first step or to the no-op no_run_started. With those looked through, the CALLs are
still one straight chain, equal to the entry point's steps and etl.pipeline_step.

A DAG in SOURCE_DAGS runs a routine of the CRM source instead (a DBA's, procedures/oltp/):
one CALL of a public.* procedure on the source connection, no run, no control task. Every
other DAG file is one of the pipeline's, held to all of the above.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import dbtools

ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = ROOT / "dags"
PROCEDURES = ROOT / "procedures" / "olap"
DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))

WAREHOUSE_CONN_ID = "b2b_sales_olap"
SOURCE_PROCEDURES = ROOT / "procedures" / "oltp"
SOURCE_CONN_ID = "b2b_sales"
SOURCE_DAGS = {"crm_archive_closed_deals"}
PIPELINE_DAG_FILES = [p for p in DAG_FILES if p.stem not in SOURCE_DAGS]
CALL = re.compile(r"^\s*CALL\s+(\w+\.\w+)\s*\((.*)\)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# A step that must never run twice: retrying it starts another run.
NO_RETRY = {"etl.start_run"}
CALL_OPERATOR = "SQLExecuteQueryOperator"
RUN_ID_TEMPLATE = "{{ ti.xcom_pull(task_ids='etl.start_run')[0][0] }}"


@dataclass(frozen=True)
class Control:
    """A flow-control task allowed besides the CALLs: its operator, its exact SQL and
    parameters (None: it has none), and where it stands."""

    operator: str
    sql: str | None
    parameters: dict[str, str] | None
    upstream: set[str]
    downstream: set[str] | None  # None: checked by the test of its DAG (the first step)


CONTROL = {
    # dwh_initial_load: wait, in reschedule mode, until no run is going.
    "etl.pipeline_idle": Control(
        "SqlSensor", "SELECT etl.pipeline_idle()", None, set(), {"etl.start_run"}
    ),
    # dwh_incremental_update: the steps only when etl.start_run started a run.
    "run_started": Control(
        "BranchSQLOperator",
        "SELECT %(run_id)s::bigint IS NOT NULL",
        {"run_id": RUN_ID_TEMPLATE},
        {"etl.start_run"},
        None,
    ),
    "no_run_started": Control("EmptyOperator", None, None, {"run_started"}, set()),
}
# What each DAG does while another run is going (etl.start_run's p_when_busy), and the
# control tasks that this takes.
WHEN_BUSY = {
    "dwh_initial_load": ("wait", {"etl.pipeline_idle"}),
    "dwh_incremental_update": ("skip", {"run_started", "no_run_started"}),
    "dwh_horizon_move": ("wait", {"etl.pipeline_idle"}),
}
# DAGs on a calendar that wait for their next date the first time (no start_date); the
# others run at once when first unpaused (the incremental update) or only when triggered.
WAIT_FOR_THEIR_DATE = SOURCE_DAGS | {"dwh_horizon_move"}


def is_call(task: Any) -> bool:
    return type(task).__name__ == CALL_OPERATOR


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Airflow's DagBag over dags/, with Airflow configured in a scratch AIRFLOW_HOME (Airflow
    reads its configuration when first imported, so the environment is set before that)."""
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(home))
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
        mp.delenv("AIRFLOW_CONFIG", raising=False)
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(DAGS_FOLDER))


def dags_of(dagbag: Any, path: Path) -> list[Any]:
    return [dag for dag in dagbag.dags.values() if Path(dag.fileloc) == path]


def procedure_of(task: Any) -> str:
    """The procedure a task calls, asserting its SQL is one CALL and nothing else."""
    assert isinstance(task.sql, str), f"{task.task_id}: one CALL per task, not a list of statements"
    match = CALL.match(task.sql)
    assert match, f"{task.task_id}: SQL is not a single CALL: {task.sql!r}"
    assert ";" not in match.group(2), f"{task.task_id}: more than one statement: {task.sql!r}"
    return match.group(1)


def chain_of(dag: Any) -> list[str]:
    """The DAG's CALL task ids in order, asserting they form one straight chain once the
    control tasks between them (CONTROL) are looked through."""

    def calls_after(task: Any) -> set[str]:
        found: set[str] = set()
        for task_id in task.downstream_task_ids:
            after = dag.get_task(task_id)
            found |= {task_id} if is_call(after) else calls_after(after)
        return found

    calls = [t for t in dag.tasks if is_call(t)]
    roots = [t for t in calls if not any(t.task_id in calls_after(u) for u in calls)]
    assert len(roots) == 1, f"{dag.dag_id}: one first CALL expected, found {roots}"
    order = [roots[0].task_id]
    while following := calls_after(dag.get_task(order[-1])):
        assert len(following) == 1, (
            f"{dag.dag_id}: {order[-1]} fans out to {sorted(following)}; the steps serialise on "
            "the pipeline lock, so the CALLs are a straight chain"
        )
        order.append(following.pop())
    assert len(order) == len(calls), f"{dag.dag_id}: CALL tasks outside the chain"
    return order


def test_dags_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_FILES, "no DAG files in dags/"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_dag_file_defines_one_dag_named_after_it(dagbag, path):
    assert [dag.dag_id for dag in dags_of(dagbag, path)] == [path.stem]


def test_each_dag_is_a_pipeline_dag_or_a_source_dag():
    """A new DAG is held to the pipeline's checks unless it is listed as a source DAG."""
    assert {p.stem for p in PIPELINE_DAG_FILES} == set(WHEN_BUSY)
    assert {p.stem for p in DAG_FILES} - set(WHEN_BUSY) == SOURCE_DAGS


@pytest.mark.parametrize("dag_id", sorted(SOURCE_DAGS))
def test_a_source_dag_is_one_call_and_nothing_else(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert len(dag.tasks) == 1 and is_call(dag.tasks[0]), [t.task_id for t in dag.tasks]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_dag_reads_like_configuration(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    assert dag.tags, "tags"
    assert dag.doc_md and dag.doc_md == ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    if dag.dag_id in WAIT_FOR_THEIR_DATE:
        # None: a start_date in the past with catchup=False makes Airflow run a DAG it has
        # never run at once, for its latest past date; these wait for their next date.
        assert dag.start_date is None, "no start_date"
    else:
        assert dag.start_date is not None and dag.start_date.tzinfo is not None
        assert dag.start_date < datetime.now(UTC), "a fixed start_date in the past"
    assert dag.default_args.get("retries", 0) >= 1, "default_args give retries"
    assert len(path.read_text().splitlines()) <= 80, "a DAG file stays short"
    assert dag.is_paused_upon_creation is False, "arrives unpaused, whatever airflow.cfg says"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_task_calls_exactly_the_procedure_its_id_names(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    procedures, schemas, conn_id = (
        (SOURCE_PROCEDURES, ("public",), SOURCE_CONN_ID)
        if dag.dag_id in SOURCE_DAGS
        else (PROCEDURES, ("etl", "dwh"), WAREHOUSE_CONN_ID)
    )
    for task in dag.tasks:
        if not is_call(task):
            assert task.task_id in CONTROL, f"{task.task_id}: neither a CALL nor a control task"
            continue
        procedure = procedure_of(task)
        assert task.task_id == procedure
        schema, name = procedure.split(".")
        assert list(procedures.glob(f"*/{procedure}.sql")), f"no {procedures}/*/{procedure}.sql"
        assert schema in schemas and name
        assert task.conn_id == conn_id, task.task_id
        assert task.autocommit is True, f"{task.task_id}: procedures commit, so autocommit"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_values_reach_the_sql_only_through_parameters(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    for task in dag.tasks:
        if not hasattr(task, "sql"):
            assert type(task).__name__ == "EmptyOperator", task.task_id
            continue
        assert "{{" not in task.sql and "{%" not in task.sql, f"{task.task_id}: templated SQL"
        placeholders = set(PLACEHOLDER.findall(task.sql))
        assert placeholders == set(task.parameters or {}), task.task_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_every_step_retries_except_starting_a_run(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    for task in dag.tasks:
        if task.task_id in NO_RETRY:
            assert task.retries == 0, f"{task.task_id}: a retry would start a second run"
        else:
            assert task.retries >= 1, task.task_id


@pytest.mark.parametrize("path", PIPELINE_DAG_FILES, ids=lambda p: p.name)
def test_each_dag_is_one_straight_chain_from_starting_a_run(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    assert chain_of(dag)[0] == "etl.start_run"


def entry_point_steps(procedure: str) -> list[str]:
    """The procedures an entry point calls, in order: what its DAG must run."""
    (path,) = PROCEDURES.glob(f"*/{procedure}.sql")
    body = path.read_text().split("$proc$")[1]
    return re.findall(r"^\s*CALL\s+(\w+\.\w+)\s*\(", body, re.MULTILINE)


def test_the_branch_operator_is_airflow_s_own_with_parameters_templated():
    """dag_factory.BranchSQLOperator only adds `parameters` to Airflow's template_fields."""
    from airflow.providers.common.sql.operators import sql as sql_operators

    from b2bdwh import dag_factory

    ours = dag_factory.BranchSQLOperator
    assert ours.__bases__ == (sql_operators.BranchSQLOperator,)
    own = {name for name in vars(ours) if not name.startswith("_")}
    assert own == {"template_fields"}, "no method, no other setting"
    assert not [name for name, value in vars(ours).items() if callable(value)], vars(ours)
    assert ours.template_fields == (*sql_operators.BranchSQLOperator.template_fields, "parameters")


@pytest.mark.parametrize("path", PIPELINE_DAG_FILES, ids=lambda p: p.name)
def test_control_tasks_are_airflow_operators_with_exactly_their_sql_in_their_place(dagbag, path):
    (dag,) = dags_of(dagbag, path)
    when_busy, expected = WHEN_BUSY[dag.dag_id]
    controls = {t.task_id: t for t in dag.tasks if not is_call(t)}
    assert set(controls) == expected, dag.dag_id
    for task_id, task in controls.items():
        rule = CONTROL[task_id]
        assert type(task).__name__ == rule.operator, task_id
        assert not hasattr(task, "python_callable"), f"{task_id}: no Python in a task"
        assert getattr(task, "sql", None) == rule.sql, task_id
        assert (getattr(task, "parameters", None) or None) == rule.parameters, task_id
        if rule.sql is not None:
            assert task.conn_id == WAREHOUSE_CONN_ID, task_id
        assert task.upstream_task_ids == rule.upstream, task_id
        if rule.downstream is not None:
            assert task.downstream_task_ids == rule.downstream, task_id
    start = dag.get_task("etl.start_run")
    assert start.sql.endswith(f", p_when_busy => '{when_busy}')"), start.sql


def test_the_initial_load_sensor_waits_in_reschedule_mode(dagbag):
    sensor = dagbag.dags["dwh_initial_load"].get_task("etl.pipeline_idle")
    assert sensor.mode == "reschedule", "no worker held while waiting"
    assert sensor.poke_interval <= 30, "starts soon after the pipeline is idle"
    assert sensor.timeout >= 3600, "long enough for any incremental run to end"
    assert list(PROCEDURES.glob("*/etl.pipeline_idle.sql")), "the function the sensor polls"


def test_the_incremental_branch_follows_the_steps_only_when_a_run_started(dagbag):
    dag = dagbag.dags["dwh_incremental_update"]
    branch = dag.get_task("run_started")
    first_step = chain_of(dag)[1]
    assert branch.follow_task_ids_if_true == [first_step]
    assert branch.follow_task_ids_if_false == ["no_run_started"]
    assert branch.downstream_task_ids == {first_step, "no_run_started"}
    # Every step after the first is skipped with it: the default trigger rule.
    assert {t.trigger_rule for t in dag.tasks} == {"all_success"}


PIPELINES = {
    "dwh_initial_load": ("initial_load", "etl.run_initial_load"),
    "dwh_incremental_update": ("incremental_update", "etl.run_incremental_update"),
    "dwh_horizon_move": ("horizon_move", "etl.run_horizon_move"),
}


def test_initial_load_runs_the_steps_of_etl_run_initial_load_in_order(dagbag):
    dag = dagbag.dags["dwh_initial_load"]
    steps = entry_point_steps("etl.run_initial_load")
    assert steps == [
        "etl.start_run",
        "etl.extract_source",
        "etl.purge_change_log",
        "dwh.load_dim_date",
        "dwh.load_dim_account",
        "dwh.load_dim_sales_agent",
        "dwh.load_dim_product",
        "dwh.load_fact_sales_performance",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.finish_run",
    ]
    assert chain_of(dag) == steps


def test_incremental_update_runs_the_steps_of_etl_run_incremental_update_in_order(dagbag):
    dag = dagbag.dags["dwh_incremental_update"]
    steps = entry_point_steps("etl.run_incremental_update")
    assert steps == [
        "etl.start_run",
        "etl.pull_change_window",
        "dwh.load_dim_date",
        "dwh.load_dim_account",
        "dwh.load_dim_sales_agent",
        "dwh.load_dim_product",
        "dwh.load_deal_history",
        "dwh.load_fact_sales_performance",
        "dwh.load_fact_sales_monthly_aggregate",
        "etl.validate_run",
        "etl.purge_change_log",
        "etl.finish_run",
    ]
    assert chain_of(dag) == steps


@pytest.mark.parametrize(
    ("pipeline", "dag_id"),
    [(pipeline, dag_id) for dag_id, (pipeline, _entry) in PIPELINES.items()],
)
def test_entry_point_dag_and_pipeline_step_agree(dagbag, warehouse, pipeline, dag_id):
    """etl.pipeline_step is what etl.begin_step enforces: a step the entry point or the DAG
    calls that it does not list would be refused, one it lists that they skip would block
    every later step."""
    listed = [
        step
        for (step,) in dbtools.query(
            warehouse.olap_dsn,
            "SELECT step FROM etl.pipeline_step WHERE pipeline = %s ORDER BY position",
            (pipeline,),
        )
    ]
    assert ["etl.start_run", *listed] == entry_point_steps(f"etl.run_{pipeline}")
    assert ["etl.start_run", *listed] == chain_of(dagbag.dags[dag_id])


def test_horizon_move_runs_the_steps_of_etl_run_horizon_move_in_order(dagbag):
    steps = entry_point_steps("etl.run_horizon_move")
    assert steps == [
        "etl.start_run",
        "dwh.move_facts_across_horizon",
        "etl.validate_run",
        "etl.finish_run",
    ]
    assert chain_of(dagbag.dags["dwh_horizon_move"]) == steps


def test_horizon_move_runs_on_the_first_of_each_month_from_the_next_one(dagbag):
    dag = dagbag.dags["dwh_horizon_move"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable", dag.timetable
    assert "expression='0 3 1 * *', timezone='UTC'" in repr(dag.timetable)
    assert dag.start_date is None


def test_incremental_update_is_scheduled_every_fifteen_minutes_without_catchup(dagbag):
    from datetime import timedelta

    dag = dagbag.dags["dwh_incremental_update"]
    assert dag.timetable.delta == timedelta(minutes=15), dag.timetable
    assert dag.catchup is False and dag.max_active_runs == 1


@pytest.mark.parametrize("dag_id", sorted(PIPELINES))
def test_each_pipeline_starts_its_run_with_the_batch_size_param(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    pipeline, _entry = PIPELINES[dag_id]
    start = dag.get_task("etl.start_run")
    assert re.match(rf"CALL etl\.start_run\('{pipeline}', %\(batch_size\)s", start.sql)
    assert start.parameters == {"batch_size": "{{ params.batch_size }}"}
    assert dag.params["batch_size"] is None, "default None: etl.config decides"
    assert dag.render_template_as_native_obj, "None and numbers reach psycopg as themselves"


def test_initial_load_batch_size_param_accepts_positive_integers_only(dagbag):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["dwh_initial_load"].params.get_param("batch_size")
    for good in (None, 1, 50_000):
        assert Param(good, **param.schema).resolve() == good
    for bad in (0, -5, "many", 1.5):
        with pytest.raises(ParamValidationError):
            Param(bad, **param.schema).resolve()


@pytest.mark.parametrize("dag_id", sorted(PIPELINES))
def test_each_pipeline_works_for_the_run_that_start_run_created(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    for task in dag.tasks:
        if task.task_id == "etl.start_run" or not is_call(task):
            continue
        assert task.sql == f"CALL {task.task_id}(%(run_id)s::bigint)"
        assert task.parameters["run_id"] == RUN_ID_TEMPLATE
