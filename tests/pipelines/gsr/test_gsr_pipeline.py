"""The GSR pipeline as task types: GsrRunWorkflow run inline, bad input, and a SIGKILL.

Observations come from the solver's stand-in problem turned into ``gsr_observations``
rows (``observations_from_system``): a well-posed GSR in seconds, where the mission
simulator needs a simulated year (see ``test_gsr_adapter.py``).
"""

from __future__ import annotations

import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from gsr_testing import mpi_missing
from tests.helpers import wait_for, write_descriptor

import dpct.pipelines.gsr as gsr
from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.pipelines.gsr.adapter import adapt, observations_from_system
from dpct.processing import LocalCluster, run_inline
from dpct.storage import Database, ProductStore, find_datasets, read_product, register_dataset
from dpct.tasks import TASK_TYPES, JobContext, PermanentTaskError
from dpct.testing import FakeClock, gsr_problem
from dpct.workflows import service

DAY = 700
T0 = DAY * NS_PER_DAY
ASTRO = ("ra_cosdec_mas", "dec_mas", "parallax_mas", "pmra_masyr", "pmdec_masyr")
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}


@dataclass
class Inputs:
    problem: gsr_problem.SyntheticProblem
    observations: pa.Table
    catalogue: pa.Table
    truth: pa.Table
    spec: DataSpec


def _inputs(n_stars: int, seed: int) -> Inputs:
    problem = gsr_problem.make_problem(
        n_stars=n_stars, mission_days=365.0, knot_minutes=2880.0, n_ccd_strips=2, seed=seed
    )
    system = problem.linear_system(noise=True)
    ids = 10_000 + np.arange(system.layout.n_stars, dtype=np.int64)
    rows = observations_from_system(system, source_id=ids, origin_ns=T0)
    catalogue = pa.table(
        {"source_id": ids, "ra_deg": np.rad2deg(problem.ra), "dec_deg": np.rad2deg(problem.dec)}
    )
    astro = problem.layout.astrometric(problem.truth)
    truth = pa.table({"source_id": ids, **{f"delta_{n}": astro[:, k] for k, n in enumerate(ASTRO)}})
    end = int(rows.column("obmt_ns").to_numpy().max()) + 1
    end = -(-end // NS_PER_DAY) * NS_PER_DAY
    return Inputs(problem, rows, catalogue, truth, DataSpec("gsr_observations", T0, end))


@pytest.fixture(scope="module")
def standin() -> Inputs:
    return _inputs(300, 4)


def _register(db: Database, settings: Settings, inputs: Inputs, now: float) -> None:
    """Observations as monthly datasets (a solve reads many), catalogue and truth whole."""
    store = ProductStore(settings.store_root)
    obs = inputs.observations
    t = obs.column("obmt_ns").to_numpy()
    month = 30 * NS_PER_DAY
    files = []
    for start in range(inputs.spec.start_ns, inputs.spec.end_ns, month):
        stop = min(start + month, inputs.spec.end_ns)
        part = obs.filter(pa.array((t >= start) & (t < stop)))
        spec = DataSpec("gsr_observations", start, stop)
        files.append(store.write(part, spec, "sim"))
    whole = DataSpec("gsr_reference_catalogue", inputs.spec.start_ns, inputs.spec.end_ns)
    files.append(store.write(inputs.catalogue, whole, "sim"))
    files.append(store.write(inputs.truth, whole.with_type("gsr_astrometric_truth"), "sim"))
    with db.write() as conn:
        for f in files:
            register_dataset(conn, f, now=now, software_version="test")


def _product(db: Database, spec: DataSpec, data_type: str) -> pa.Table:
    with db.read() as conn:
        found = find_datasets(conn, spec.with_type(data_type))
    return pa.concat_tables([read_product(d.location, data_type) for d in found])


def _reference(inputs: Inputs, **solve_kwargs: float) -> tuple[gsr.GsrSystem, gsr.LsqrResult]:
    """The uninterrupted solve of the same rows, in this process."""
    system = adapt(inputs.observations, inputs.catalogue).system
    return system, gsr.solve(system, **solve_kwargs)


def _solution(astrometric: pa.Table) -> np.ndarray:
    return np.stack([astrometric.column(f"delta_{n}").to_numpy() for n in ASTRO], axis=1)


def test_workflow_inline_solves_reports_and_matches_the_library(
    db: Database, settings: Settings, clock: FakeClock, standin: Inputs
) -> None:
    rows = service.install_pipeline(db, "gsr", now=clock())
    assert [r.name for r in rows] == ["GsrRunWorkflow"]
    _register(db, settings, standin, clock())
    wf = service.submit(db, "GsrRunWorkflow", standin.spec, now=clock())
    run_inline(db, settings, clock)
    jobs = {j.step: j for j in service.jobs(db, wf)}
    assert {s: j.status for s, j in jobs.items()} == {"solve": "SUCCESS", "report": "SUCCESS"}

    system, ref = _reference(standin, atol=1e-10, btol=1e-10)
    astrometric = _product(db, standin.spec, "gsr_solution_astrometric")
    got = _solution(astrometric)
    # the same code on the same rows: the same numbers
    assert np.array_equal(got, system.layout.astrometric(ref.x))
    assert astrometric.column("n_obs").to_numpy().sum() == system.n_rows
    conv = _product(db, standin.spec, "gsr_convergence")
    assert conv.column("iteration").to_pylist() == list(range(1, ref.itn + 1))
    resid = _product(db, standin.spec, "gsr_residuals")
    assert resid.num_rows == system.n_rows
    # post-fit residuals are smaller than the noise by sqrt(dof / rows)
    dof = system.n_rows - system.layout.n_unknowns
    z = resid.column("normalised").to_numpy() * np.sqrt(system.n_rows / dof)
    assert 0.95 < np.std(z) < 1.05

    report = _product(db, standin.spec, "gsr_report")
    values = {
        (s, q): (v, n)
        for s, q, v, n in zip(*(report.column(c).to_pylist() for c in
                                ("section", "quantity", "value", "note")), strict=True)
    }  # fmt: skip
    assert values[("convergence", "iterations")][0] == ref.itn
    assert values[("truth", "stars compared")][0] == system.layout.n_stars
    assert 0.8 < values[("truth", "pull std (all astrometric)")][0] < 1.5
    plot = Path(values[("plot", "figure")][1])
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_input_fails_for_good_with_the_library_message(
    db: Database, settings: Settings, clock: FakeClock, standin: Inputs, tmp_path: Path
) -> None:
    solve_task = TASK_TYPES.get("gsr.solve")
    spec = standin.spec
    log = logging.getLogger("test.gsr")
    # NaN partials: named rows, before any iteration
    obs = standin.observations
    resid = obs.column("al_residual_uas").to_numpy().copy()
    resid[[3, 7]] = np.nan
    bad = obs.set_column(obs.schema.get_field_index("al_residual_uas"), "al_residual_uas",
                         pa.array(resid))  # fmt: skip
    tables = {"observations": bad, "catalogue": standin.catalogue}
    with pytest.raises(PermanentTaskError, match=r"NaN or infinite values in 'al_residual_uas'"):
        solve_task.run(tables, {}, spec, log, tmp_path / "job-1")
    assert not (tmp_path / "job-1").exists() or not any((tmp_path / "job-1").iterdir())

    # rows of stars missing from the catalogue, through the processing core
    _register(db, settings, standin, clock())
    store = ProductStore(settings.store_root)
    cat = standin.catalogue.filter(pc.greater(standin.catalogue.column("source_id"), 10_002))
    late = DataSpec("gsr_reference_catalogue", spec.end_ns, spec.end_ns + NS_PER_DAY)
    moved = obs.set_column(
        obs.schema.get_field_index("obmt_ns"),
        "obmt_ns",
        pc.add(obs.column("obmt_ns"), pa.scalar(spec.end_ns - T0, pa.int64())),
    )
    with db.write() as conn:
        register_dataset(conn, store.write(cat, late, "bad"), now=clock(), software_version="t")
        register_dataset(
            conn,
            store.write(moved, late.with_type("gsr_observations"), "bad"),
            now=clock(),
            software_version="t",
        )
    service.install_pipeline(db, "gsr", now=clock())
    wf = service.submit(db, "GsrRunWorkflow", late.with_type("gsr_observations"), now=clock())
    run_inline(db, settings, clock)
    jobs = {j.step: j for j in service.jobs(db, wf)}
    solve = jobs["solve"]
    assert solve.status == "FAILED" and solve.attempts == 1
    assert solve.error_class == "PermanentTaskError"
    assert "missing from the reference catalogue" in solve.error_message
    assert "10000" in solve.error_message


def _summary(table: pa.Table) -> dict[str, float]:
    return dict(
        zip(table.column("name").to_pylist(), table.column("value").to_pylist(), strict=True)
    )


def test_solve_task_resumes_and_sets_aside_a_foreign_checkpoint(
    standin: Inputs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In one process: a stopped solve resumes; a checkpoint of other rows is not used."""
    solve_task = TASK_TYPES.get("gsr.solve")
    log = logging.getLogger("test.gsr")
    scratch = tmp_path / "job-7"
    scratch.mkdir()
    tables = {"observations": standin.observations, "catalogue": standin.catalogue}
    params = {"checkpoint_every": 10}

    def attempt(n: int) -> JobContext:  # of job 7: one checkpoint for all its attempts
        return JobContext(job_id=7, workflow_id=1, attempt=n, scratch=scratch)

    first = solve_task.run(
        tables, {**params, "iter_lim": 50}, standin.spec, log, scratch, job=attempt(1)
    )
    assert _summary(first["summary"])["istop"] == 7  # the iteration limit
    with caplog.at_level(logging.INFO, logger="test.gsr"):
        second = solve_task.run(tables, params, standin.spec, log, scratch, job=attempt(2))
    assert "resumed from the checkpoint at iteration 50" in caplog.text
    system, ref = _reference(standin, atol=1e-10, btol=1e-10)
    assert _summary(second["summary"])["resumed_from"] == 50
    assert np.array_equal(_solution(second["astrometric"]), system.layout.astrometric(ref.x))
    assert second["convergence"].column("iteration").to_pylist() == list(range(1, ref.itn + 1))
    assert second["astrometric"].column("solve_job").to_pylist() == [7] * system.layout.n_stars

    other = {**tables, "observations": standin.observations.slice(100)}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="test.gsr"):
        third = solve_task.run(other, params, standin.spec, log, scratch, job=attempt(3))
    assert "starting afresh" in caplog.text
    assert _summary(third["summary"])["resumed_from"] == 0
    assert list(scratch.glob("*.stale"))


def _job_log(settings: Settings, workflow: int, job: int) -> str:
    """The job's log file, read while it runs (the job row names it only at the end)."""
    path = settings.logs_dir / f"workflow-{workflow}" / f"job-{job}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.acceptance
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sigkilled_solve_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path, standin: Inputs
) -> None:
    """The must-show: kill the node mid-solve; the retry resumes at k > 0, same answer."""
    params = {"atol": 1e-10, "btol": 1e-10, "checkpoint_every": 5, "log_every": 5,
              "iteration_delay_s": 0.002}  # fmt: skip
    descriptor = write_descriptor(
        tmp_path / "GsrKill.json",
        name="GsrKill",
        version=1,
        data_type="gsr_observations",
        steps=[{"name": "solve", "task": "gsr.solve", "params": params}],
    )
    service.register_descriptor(db, descriptor)
    _register(db, settings, standin, 0.0)
    wf = service.submit(db, "GsrKill", standin.spec)
    with LocalCluster(env, nodes=2, slots=1, log_dir=tmp_path / "procs") as cluster:
        (job,) = wait_for(
            lambda: [j for j in service.jobs(db, wf) if j.status == "RUNNING"], what="solve"
        )

        def progressed() -> bool:
            done = [int(k) for k in re.findall(r"iteration (\d+)/", _job_log(settings, wf, job.id))]
            return bool(done) and max(done) >= 40

        wait_for(progressed, timeout=60, what="40 iterations in the job log")
        victim = service.job(db, job.id)[0].node
        cluster.signal(victim, signal.SIGKILL)
        wait_for(
            lambda: service.workflow(db, wf).workflow.status in ENDED,
            timeout=120,
            what="the retry to finish",
        )
    (done,) = service.jobs(db, wf)
    assert done.status == "SUCCESS" and done.attempts == 2 and done.node != victim
    log = _job_log(settings, wf, job.id)
    resumed = [int(k) for k in re.findall(r"resumed from the checkpoint at iteration (\d+)", log)]
    assert len(resumed) == 1 and resumed[0] >= 35, log[-2000:]

    system, ref = _reference(standin, atol=1e-10, btol=1e-10)
    got = _solution(_product(db, standin.spec, "gsr_solution_astrometric"))
    assert np.max(np.abs(got - system.layout.astrometric(ref.x))) <= 1e-12
    by_name = _summary(_product(db, standin.spec, "gsr_summary"))
    assert by_name["resumed_from"] == resumed[0] < ref.itn == by_name["iterations"]
    conv = _product(db, standin.spec, "gsr_convergence")
    # the history of the killed attempt survived: every iteration, once
    assert conv.column("iteration").to_pylist() == list(range(1, ref.itn + 1))
    assert set(conv.column("attempt_start").to_pylist()) == {0, resumed[0]}


@pytest.mark.slow  # a node process and mpirun ranks
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.skipif(mpi_missing() is not None, reason=mpi_missing() or "")
def test_a_node_runs_an_mpi_solve_on_two_slots(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path, standin: Inputs
) -> None:
    """Two MPI ranks launched by a node, each with a disjoint non-empty share of the rows."""
    descriptor = write_descriptor(
        tmp_path / "GsrMpi.json",
        name="GsrMpi",
        version=1,
        data_type="gsr_observations",
        steps=[
            {
                "name": "solve",
                "task": "gsr.solve",
                "cores": 2,
                # tight tolerances: the two runs round differently, and should agree
                # far below the stopping rule's own slack
                "params": {"atol": 1e-13, "btol": 1e-13, "ranks": 2, "errors": "none"},
            }
        ],
    )
    service.register_descriptor(db, descriptor)
    _register(db, settings, standin, 0.0)
    wf = service.submit(db, "GsrMpi", standin.spec)
    (job,) = service.jobs(db, wf)
    assert job.cores == 2
    with LocalCluster(env, nodes=1, slots=2, log_dir=tmp_path / "procs"):
        wait_for(
            lambda: service.workflow(db, wf).workflow.status in ENDED,
            timeout=240,
            what="the MPI solve",
        )
    (done,) = service.jobs(db, wf)
    log = _job_log(settings, wf, job.id)
    assert done.status == "SUCCESS", log[-2000:]
    ranks = [tuple(map(int, m)) for m in re.findall(r"held rows \[(\d+), (\d+)\)", log)]
    system, ref = _reference(standin, atol=1e-13, btol=1e-13)
    assert len(ranks) == 2 and ranks[0][0] == 0 and ranks[1][1] == system.n_rows
    assert ranks[0][0] < ranks[0][1] == ranks[1][0] < ranks[1][1]
    got = _solution(_product(db, standin.spec, "gsr_solution_astrometric"))
    want = system.layout.astrometric(ref.x)
    assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_rerun_is_compared_with_the_previous_solution(
    db: Database, settings: Settings, clock: FakeClock, standin: Inputs, tmp_path: Path
) -> None:
    service.install_pipeline(db, "gsr", now=clock())
    _register(db, settings, standin, clock())
    first = service.submit(db, "GsrRunWorkflow", standin.spec, now=clock())
    run_inline(db, settings, clock)
    clock.advance(60)
    # a rerun that stops much earlier: its solution moves away from the first one
    loose = write_descriptor(
        tmp_path / "GsrLoose.json",
        name="GsrLoose",
        version=1,
        data_type="gsr_observations",
        steps=[
            {"name": "solve", "task": "gsr.solve", "params": {"atol": 1e-3, "btol": 1e-3}},
            {"name": "report", "task": "gsr.report", "depends_on": ["solve"]},
        ],
    )
    service.register_descriptor(db, loose, now=clock())
    second = service.submit(db, "GsrLoose", standin.spec, now=clock())
    run_inline(db, settings, clock)
    solve_jobs = [j.id for wf in (first, second) for j in service.jobs(db, wf) if j.step == "solve"]
    astrometric = _product(db, standin.spec, "gsr_solution_astrometric")
    by_job = {
        job: astrometric.filter(pc.equal(astrometric.column("solve_job"), job)).sort_by("source_id")
        for job in solve_jobs
    }
    change = _solution(by_job[solve_jobs[1]]) - _solution(by_job[solve_jobs[0]])
    reports = _product(db, standin.spec, "gsr_report").to_pylist()
    latest = [r for r in reports if r["section"] == "previous"]
    values = {r["quantity"]: r["value"] for r in latest}
    assert values["previous solve job"] == solve_jobs[0]
    assert values["stars in common"] == len(by_job[solve_jobs[0]])
    expected = np.sqrt(np.mean(change[:, 2] ** 2))
    assert expected > 0 and values["rms change parallax_mas"] == pytest.approx(expected)
