"""The task-type contract: declaration, parameters, injected arguments, outputs, discovery."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from tests.helpers import environment_elsewhere, register

import dpct.testing.tasks  # noqa: F401  (declares testing_counts and the testing.* tasks)
from dpct.config import Settings
from dpct.datamodel import DATA_TYPES, NS_PER_DAY, DataSpec
from dpct.errors import (
    ContractError,
    DescriptorError,
    DpctError,
    SchemaMismatch,
    StorageError,
    UnknownDataType,
    UnknownTaskType,
)
from dpct.processing import Assignment, InputFile, run_assignment, run_inline
from dpct.processing._worker import Worker
from dpct.storage import Database, ProductStore, SystemServices, find_datasets
from dpct.tasks import (
    TASK_TYPES,
    JobContext,
    NoConfig,
    NoData,
    ParameterError,
    PermanentTaskError,
    TaskFailure,
    TransientError,
    retry_policy,
    task,
)
from dpct.testing import FakeClock
from dpct.workflows import parse_descriptor, service

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
DAY = 5000
SPEC = DataSpec("testing_counts", DAY * NS_PER_DAY, (DAY + 1) * NS_PER_DAY)


class EchoConfig(BaseModel, extra="forbid"):
    rows: int = 2


@task("tests.echo", outputs={"counts": "testing_counts"}, config=EchoConfig)
def echo(config: EchoConfig, spec: DataSpec, log: logging.Logger, scratch: Path) -> pa.Table:
    """Proves what the framework injects: config, spec, log and a per-job scratch folder."""
    log.info("echo sees %s", spec.text)
    (scratch / "seen").write_text(spec.text)
    return pa.table(
        {
            "obmt_ns": pa.array([spec.start_ns] * config.rows, pa.int64()),
            "value": pa.array([float(spec.duration_ns)] * config.rows),
        }
    )


@task("tests.sum", inputs={"counts": "testing_counts"}, outputs={"total": "testing_counts"})
def total(counts: pa.Table) -> pa.Table:
    """Reads its input as one typed table made of every overlapping dataset."""
    return pa.table({"obmt_ns": pa.array([0], pa.int64()), "value": [float(counts.num_rows)]})


@task("tests.undeclared", outputs={"counts": "testing_counts"})
def undeclared() -> dict[str, pa.Table]:
    good = pa.table({"obmt_ns": pa.array([1], pa.int64()), "value": [1.0]})
    return {"counts": good, "bogus": good}


@task("tests.wrong_schema", outputs={"counts": "testing_counts"})
def wrong_schema() -> pa.Table:
    return pa.table({"obmt_ns": pa.array([1], pa.int64()), "valeu": [1.0]})


@task("tests.two_outputs", outputs={"a": "testing_counts", "b": "testing_counts"})
def two_outputs() -> pa.Table:
    return pa.table({"obmt_ns": pa.array([1], pa.int64()), "value": [1.0]})


@task("tests.job", outputs={"counts": "testing_counts"})
def job_report(spec: DataSpec, job: JobContext) -> pa.Table:
    """Writes a report where the framework says, naming the job it was told it runs."""
    job.report_path("tests_job.txt").write_text(f"{job.job_id} {job.workflow_id} {job.attempt}")
    return pa.table({"obmt_ns": pa.array([spec.start_ns], pa.int64()), "value": [1.0]})


@task("tests.system_count", outputs={"counts": "testing_counts"}, system=True)
def system_count(spec: DataSpec, system: SystemServices) -> pa.Table:
    """A system task: counts the testing_counts datasets of its interval in its database."""
    with system.database.read() as conn:
        found = find_datasets(conn, spec.with_type("testing_counts"))
    return pa.table(
        {"obmt_ns": pa.array([spec.start_ns], pa.int64()), "value": [float(len(found))]}
    )


def _assignment(tmp_path: Path, task_type: str, params: dict | None = None, **extra) -> Assignment:
    paths = {
        "log_path": str(tmp_path / "logs" / "job-7.log"),
        "store_root": str(tmp_path / "products"),
        "scratch_dir": str(tmp_path / "scratch" / "job-7"),
    }
    return Assignment(
        job_id=7,
        workflow_id=3,
        token="0123456789abcdef",
        attempt=1,
        task_type=task_type,
        spec=SPEC,
        params=json.dumps(params or {}),
        **{**paths, **extra},
    )


def _products(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "products").rglob("*.parquet"))


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("task_type", "params", "problem"),
    [
        ("testing.make", {"rows": "many"}, "rows: Input should be a valid integer"),
        ("testing.make", {"rowz": 3}, "rowz: Extra inputs are not permitted"),
        ("testing.noop", {"x": 1}, "x: Extra inputs are not permitted"),
        ("tests.echo", {"rows": [1]}, "rows: Input should be a valid integer"),
    ],
)
def test_parameter_errors_name_the_task_type_and_field(
    task_type: str, params: dict, problem: str
) -> None:
    with pytest.raises(ParameterError) as err:
        TASK_TYPES.get(task_type).parse_config(params)
    assert str(err.value).startswith(f"task type {task_type!r}: ")
    assert problem in str(err.value)
    assert err.value.exit_code == 2 and isinstance(err.value, DpctError)


def test_every_bad_field_is_reported_and_defaults_apply() -> None:
    make = TASK_TYPES.get("testing.make")
    with pytest.raises(ParameterError) as err:
        make.parse_config({"rows": "x", "seconds": "y"})
    assert "rows: " in str(err.value) and "; seconds: " in str(err.value)
    assert make.parse_config({}).model_dump() == {"rows": 10, "seconds": 0.0}
    assert TASK_TYPES.get("testing.noop").config is NoConfig


def test_descriptor_with_bad_parameters_names_step_and_field() -> None:
    raw = {
        "name": "P",
        "version": 1,
        "data_type": "testing_counts",
        "steps": [{"name": "echo", "task": "tests.echo", "params": {"rows": "two"}}],
    }
    with pytest.raises(DescriptorError) as err:
        parse_descriptor(raw, source="p.toml")
    assert (err.value.source, err.value.step, err.value.field) == ("p.toml", "echo", "params")
    assert "task type 'tests.echo': rows:" in str(err.value)


def test_bad_parameters_at_run_time_fail_without_retry(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "testing.make", {"rows": "many"}))
    assert (done.outcome, done.error_class, done.retry) == ("failed", "ParameterError", False)
    assert "task type 'testing.make': rows:" in done.error_message


# ---------------------------------------------------------------- declaring


def test_declaration_mistakes_are_caught_at_import() -> None:
    with pytest.raises(ValueError, match="cores must be ≥ 1"):
        task("tests.bad", cores=0)
    with pytest.raises(ValueError, match="max_attempts must be ≥ 1"):
        task("tests.bad", max_attempts=0)
    with pytest.raises(ValueError, match=r"lacks argument\(s\) for input\(s\) \['counts'\]"):
        task("tests.bad", inputs={"counts": "testing_counts"})(lambda config: None)
    with pytest.raises(ValueError, match=r"input name\(s\) \['scratch'\] are reserved"):
        task("tests.bad", inputs={"scratch": "testing_counts"})

    def echo() -> None:  # same name as tests.echo, another function
        pass

    with pytest.raises(ValueError, match=r"task type 'tests\.echo' is declared twice"):
        task("tests.echo")(echo)
    assert TASK_TYPES.get("tests.echo").func.__module__ == __name__


def test_only_system_tasks_may_ask_for_the_node_s_services() -> None:
    def science(system: SystemServices) -> None:
        pass

    with pytest.raises(ValueError, match=r"asks for \['system'\], which only system tasks get"):
        task("tests.not_system")(science)
    assert "tests.not_system" not in TASK_TYPES.names()
    assert TASK_TYPES.get("dss.retraction_clean").system
    assert TASK_TYPES.get("dts.deliver").system
    assert not TASK_TYPES.get("tests.echo").system


def test_the_job_context_names_the_job_and_puts_reports_beside_its_log(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "tests.job"))
    assert done.outcome == "success", done.error_message
    # job 7 of workflow 3, first attempt (see _assignment); beside logs/job-7.log
    assert (tmp_path / "logs" / "job-7.tests_job.txt").read_text() == "7 3 1"
    assert not (tmp_path / "scratch" / "job-7").exists()

    # no log file (an inline run without logs): the report goes to the scratch folder
    done = run_assignment(_assignment(tmp_path / "nolog", "tests.job", log_path=""))
    assert done.outcome == "success", done.error_message
    assert (tmp_path / "nolog" / "scratch" / "job-7" / "job.tests_job.txt").read_text() == "7 3 1"


def test_a_system_task_needs_the_node_s_settings(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "tests.system_count"))
    assert (done.outcome, done.error_class, done.retry) == ("failed", "ContractError", False)
    assert "system task 'tests.system_count' was assigned without the node's settings" in (
        done.error_message
    )


@SQLITE_ONLY
def test_a_system_task_uses_its_node_s_database_not_the_environment_s(
    db: Database,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = environment_elsewhere(monkeypatch, tmp_path)
    register(
        db,
        tmp_path,
        "S",
        [
            {"name": "make", "task": "testing.make", "params": {"rows": 2}},
            {"name": "count", "task": "tests.system_count", "depends_on": ["make"]},
        ],
    )
    wf = service.submit(db, "S", SPEC, now=clock())
    run_inline(db, settings, clock)
    jobs = {j.step: j for j in service.jobs(db, wf)}
    assert jobs["count"].status == "SUCCESS", jobs["count"].error_message
    with db.read() as conn:
        (counted,) = [d for d in find_datasets(conn, SPEC) if d.job_id == jobs["count"].id]
    # it saw the one dataset of the make step, registered in the node's database
    assert pq.read_table(counted.location).column("value").to_pylist() == [1.0]
    assert not elsewhere.exists()


@SQLITE_ONLY
def test_a_worker_process_opens_its_node_s_database_for_a_system_task(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment_elsewhere(monkeypatch, tmp_path)  # what the worker process inherits
    worker = Worker()
    try:
        assert worker.give(
            _assignment(tmp_path, "dss.retraction_clean", system_settings=settings), 1
        )
        assert worker.conn.poll(120), "no report from the worker"
        done = worker.conn.recv()
    finally:
        worker.stop()
    # it asked the node's (empty) database, not the unreachable one of its environment
    assert (done.outcome, done.error_message) == (
        "skipped",
        f"no retracted datasets in [{SPEC.start_ns}, {SPEC.end_ns})",
    )


def test_injected_arguments_and_outputs(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "tests.echo", {"rows": 3}))
    assert done.outcome == "success", done.error_message
    (out,) = done.outputs
    assert (out.name, out.data_type, out.rows, out.spec) == ("counts", "testing_counts", 3, SPEC)
    assert out.location == ProductStore(tmp_path / "products").location_for(
        SPEC, "j7a1-01234567"
    )  # attempt-specific name, published only when the attempt commits
    assert (tmp_path / "scratch" / "job-7" / "seen").read_text() == SPEC.text
    log = (tmp_path / "logs" / "job-7.log").read_text()
    assert f"echo sees {SPEC.text}" in log and "attempt ended: success" in log
    assert done.software_version.startswith("tests.echo@1 dpct@")
    assert json.loads(done.config_json) == {"rows": 3}
    assert len(done.config_hash) == 64


def test_inputs_arrive_as_one_typed_table_with_their_solution_ids(tmp_path: Path) -> None:
    files = []
    for k in range(2):
        part = DataSpec("testing_counts", SPEC.start_ns + k, SPEC.start_ns + k + 1)
        table = pa.table({"obmt_ns": pa.array([part.start_ns] * 3), "value": [1.0, 2.0, 3.0]})
        out = ProductStore(tmp_path / "in").write(table, part, f"k{k}")
        files.append(InputFile(dataset_id=10 + k, solution_id=100 + k, location=out.location))
    done = run_assignment(_assignment(tmp_path, "tests.sum", inputs={"counts": files}))
    assert done.outcome == "success", done.error_message
    assert [(i.dataset_id, i.solution_id, i.data_type) for i in done.inputs] == [
        (10, 100, "testing_counts"),
        (11, 101, "testing_counts"),
    ]
    (out,) = done.outputs
    assert pq.read_table(out.location).column("value").to_pylist() == [6.0]


# ---------------------------------------------------------------- broken outputs


@pytest.mark.parametrize(
    ("task_type", "message"),
    [
        (
            "tests.undeclared",
            "task type 'tests.undeclared' returned undeclared output(s) ['bogus']",
        ),
        (
            "tests.wrong_schema",
            "data type 'testing_counts' v1: column 'value' is missing in output 'counts' "
            "of task type 'tests.wrong_schema'",
        ),
        (
            "tests.two_outputs",
            "task type 'tests.two_outputs' returned one table but declares 2 outputs; "
            "return a dict by output name",
        ),
    ],
)
def test_broken_outputs_fail_clearly_and_publish_nothing(
    tmp_path: Path, task_type: str, message: str
) -> None:
    done = run_assignment(_assignment(tmp_path, task_type))
    assert done.outcome == "failed"
    assert done.error_message == message
    assert done.outputs == [] and _products(tmp_path) == []
    assert message in (tmp_path / "logs" / "job-7.log").read_text()
    if task_type == "tests.wrong_schema":
        assert (done.error_class, done.retry) == ("SchemaMismatch", False)


@SQLITE_ONLY
def test_wrong_schema_through_the_queue_fails_once_and_registers_nothing(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "W", [{"name": "w", "task": "tests.wrong_schema"}])
    wf = service.submit(db, "W", SPEC, now=clock())
    assert run_inline(db, settings, clock) != []
    (job,) = service.jobs(db, wf)
    assert (job.status, job.attempts, job.error_class) == ("FAILED", 1, "SchemaMismatch")
    assert "column 'value' is missing in output 'counts'" in job.error_message
    assert job.solution_id is None
    assert service.workflow(db, wf).workflow.status == "FAILED"
    assert not list(settings.products_dir.rglob("*.parquet"))


@pytest.mark.parametrize(
    ("kind", "outcome", "error_class", "retry"),
    [
        ("permanent", "failed", "PermanentTaskError", False),
        ("transient", "failed", "TransientError", True),
        ("bug", "failed", "RuntimeError", True),
    ],
)
def test_failure_classes_say_what_the_scheduler_does(
    tmp_path: Path, kind: str, outcome: str, error_class: str, retry: bool
) -> None:
    done = run_assignment(_assignment(tmp_path, "testing.fail", {"kind": kind}))
    assert (done.outcome, done.error_class, done.retry) == (outcome, error_class, retry)


def test_no_data_is_skipped_not_failed(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "testing.scale"))  # no input datasets
    assert (done.outcome, done.error_class) == ("skipped", "NoData")
    assert done.error_message == "no testing_counts rows in this interval"
    assert [retry_policy(c) for c in (NoData, PermanentTaskError, SchemaMismatch)] == [
        "skip",
        "fail",
        "fail",
    ]
    assert retry_policy(KeyError) == "retry"


def test_error_classes_say_whether_to_retry_under_one_root() -> None:
    for error in (NoData, PermanentTaskError, TransientError):
        assert issubclass(error, TaskFailure) and issubclass(error, DpctError)
    never = (PermanentTaskError, SchemaMismatch, ContractError, UnknownTaskType)
    never += (UnknownDataType, ParameterError)
    assert [retry_policy(c) for c in never] == ["fail"] * len(never)
    # passing conditions, dpct errors that say nothing, and bugs: retried (bounded)
    assert [retry_policy(c) for c in (TransientError, StorageError, DpctError)] == ["retry"] * 3
    assert (TaskFailure().exit_code, ParameterError().exit_code) == (1, 2)


def test_unknown_task_type_fails_without_retry(tmp_path: Path) -> None:
    done = run_assignment(_assignment(tmp_path, "tests.nowhere"))
    assert (done.outcome, done.error_class, done.retry) == ("failed", "UnknownTaskType", False)
    assert "unknown task type 'tests.nowhere'" in done.error_message


# ---------------------------------------------------------------- discovery


def test_entry_point_discovery_finds_the_plugin_package() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="dpct.tasks")}
    assert eps.get("example") == "dpct_example_plugin", "pip install ./tests/plugin"
    assert eps.get("demo") == "dpct.pipelines.demo"
    double = TASK_TYPES.get("example.double")
    assert double.func.__module__ == "dpct_example_plugin"
    assert (dict(double.inputs), dict(double.outputs)) == (
        {"counts": "testing_counts"},
        {"doubled": "example_doubled"},
    )
    assert "example_doubled" in DATA_TYPES
    assert "example.double" in TASK_TYPES.names()


@pytest.mark.slow  # two fresh interpreters
def test_discovery_in_a_fresh_interpreter_entry_points_and_task_modules() -> None:
    """Entry points alone give the installed packages; DPCT_TASK_MODULES adds modules."""
    code = "from dpct.tasks import TASK_TYPES; print(' '.join(TASK_TYPES.names()))"
    env = {k: v for k, v in os.environ.items() if k != "DPCT_TASK_MODULES"}
    plain = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    extended = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**env, "DPCT_TASK_MODULES": "dpct.testing.tasks"},
        stdout=subprocess.PIPE,
        text=True,
    )
    plain_names = set(plain.communicate(timeout=60)[0].split())
    extended_names = set(extended.communicate(timeout=60)[0].split())
    assert plain.returncode == extended.returncode == 0
    assert {"example.double", "demo.ingest", "demo.report"} <= plain_names
    assert not any(n.startswith("testing.") for n in plain_names)
    assert extended_names == plain_names | {n for n in extended_names if n.startswith("testing.")}
    assert {"testing.make", "testing.noop"} <= extended_names


@SQLITE_ONLY
def test_plugin_task_runs_through_a_descriptor(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(
        db,
        tmp_path,
        "Plug",
        [
            {"name": "make", "task": "testing.make", "params": {"rows": 4}},
            {
                "name": "double",
                "task": "example.double",
                "depends_on": ["make"],
                "params": {"offset": 1.0},
            },
        ],
    )
    wf = service.submit(db, "Plug", SPEC, now=clock())
    run_inline(db, settings, clock)
    make, double = service.jobs(db, wf)
    assert (make.status, double.status) == ("SUCCESS", "SUCCESS")
    (location,) = [
        p for p in settings.products_dir.rglob("*.parquet") if "example_doubled" in str(p)
    ]
    values = pq.read_table(location).column("value").to_pylist()
    assert values == [2.0 * v + 1.0 for v in range(4)]
    assert service.solution_lineage(db, double.solution_id).ancestors == [make.solution_id]
