"""The GSR pipeline's task types and data types: ``gsr.solve`` and ``gsr.report``.

``gsr.solve`` turns the ``gsr_observations`` of a requested OBMT range into a GsrSystem
(:mod:`dpct.pipelines.gsr.adapter`), solves it with checkpoints kept in the job's
scratch folder (so an attempt on another node, after this one's node died, resumes at
the last saved iteration instead of starting over), computes standard errors and
writes the solution products. ``gsr.report`` summarises a solution: convergence,
residuals and, when a truth is registered for the range, the comparison with it.

Bad input (rows naming stars missing from the catalogue, NaN partials, rows without
the solver's structure) is found before the first iteration and fails the job for good,
with the library's message: retrying cannot fix the data.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from dpct.datamodel import DataSpec, data_type
from dpct.pipelines.gsr import report
from dpct.pipelines.gsr._checkpoint import checkpoint_path
from dpct.pipelines.gsr._distributed import save_system
from dpct.pipelines.gsr._errors import SCHUR_MAX_SHARED, standard_errors
from dpct.pipelines.gsr._exceptions import CheckpointMismatchError, GsrInputError
from dpct.pipelines.gsr._kernels import matvec
from dpct.pipelines.gsr._lsqr import LsqrResult, solve
from dpct.pipelines.gsr._progress import IterationInfo
from dpct.pipelines.gsr._system import GsrSystem
from dpct.pipelines.gsr.adapter import GsrInput, adapt
from dpct.pipelines.gsr.mpi import MpiError, run_mpi
from dpct.pipelines.gsr.report import ASTRO_COLUMNS, ASTRO_DOC, ASTRO_UNITS
from dpct.tasks import JobContext, NoData, PermanentTaskError, task

WORKFLOWS = Path(__file__).with_name("workflows")

_ASTRO, _ASTRO_UNITS, _ASTRO_DOC = ASTRO_COLUMNS, ASTRO_UNITS, ASTRO_DOC

data_type(
    "gsr_astrometric_truth",
    1,
    [("source_id", "int64", "", "star")]
    + [
        (f"delta_{n}", "float64", u, f"true − reference {d}")
        for n, u, d in zip(_ASTRO, _ASTRO_UNITS, _ASTRO_DOC, strict=True)
    ],
    description="True corrections of simulated stars, for gsr.report to compare with (tests)",
)
data_type(
    "gsr_solution_astrometric",
    1,
    [
        ("source_id", "int64", "", "star"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it (-1 outside a job)"),
        ("n_obs", "int64", "", "observations used"),
    ]
    + [
        (f"delta_{n}", "float64", u, f"correction {d} to the reference catalogue")
        for n, u, d in zip(_ASTRO, _ASTRO_UNITS, _ASTRO_DOC, strict=True)
    ]
    + [
        (f"sigma_{n}", "float64", u, f"standard error of {d} (5×5 star block)")
        for n, u, d in zip(_ASTRO, _ASTRO_UNITS, _ASTRO_DOC, strict=True)
    ],
    description="GSR astrometric solution: corrections and standard errors per star",
)
data_type(
    "gsr_solution_attitude",
    1,
    [
        ("coeff_index", "int64", "", "absolute B-spline coefficient index j (att_first_coeff)"),
        ("obmt_ns", "int64", "ns", "where coefficient j weighs most: knot j − 1"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it"),
    ]
    + [(f"theta_{a}_mas", "float64", "mas", f"attitude correction about SRS {a}") for a in "xyz"]
    + [(f"sigma_{a}_mas", "float64", "mas", f"standard error of theta_{a}") for a in "xyz"],
    description="GSR attitude solution: B-spline coefficients of the attitude correction",
    time_column="obmt_ns",
)
data_type(
    "gsr_solution_instrument",
    1,
    [
        ("parameter", "string", "", "instrument, or the global gamma_minus_one (PPN γ − 1)"),
        ("column", "int32", "", "instrument unknown (instr_cols numbering); -1 if global"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it"),
        ("value", "float64", "mas | 1", "correction: mas for instrument, unitless for γ − 1"),
        ("sigma", "float64", "mas | 1", "standard error, same unit"),
    ],
    description="GSR instrument and global solution (one row per unknown)",
)
data_type(
    "gsr_convergence",
    1,
    [
        ("iteration", "int64", "", "LSQR iteration"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it"),
        ("attempt_start", "int64", "", "iteration the attempt that ran it resumed from (0: fresh)"),
        ("r1norm", "float64", "", "‖b − A x‖, weighted (units of σ)"),
        ("r2norm", "float64", "", "‖(b − A x, damp·x)‖; equals r1norm (no damping)"),
        ("arnorm", "float64", "", "‖Aᵀ(b − A x)‖ estimate (preconditioned)"),
        ("anorm", "float64", "", "Frobenius norm estimate of A M"),
        ("acond", "float64", "", "condition estimate of A M"),
        ("test1", "float64", "", "LSQR's compatible-system test (vs btol)"),
        ("test2", "float64", "", "LSQR's least-squares test (vs atol)"),
        ("seconds", "float64", "s", "wall time of its attempt so far"),
    ],
    description="GSR convergence history, one row per LSQR iteration",
)
data_type(
    "gsr_summary",
    1,
    [
        ("name", "string", "", "quantity"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it"),
        ("value", "float64", "", "its value (NaN for text)"),
        ("text", "string", "", "its value as text, or a note"),
    ],
    description="What a GSR solve did: sizes, stopping reason, unit-weight error, epoch",
)
data_type(
    "gsr_residuals",
    1,
    [
        ("obs_id", "int64", "", "observation"),
        ("source_id", "int64", "", "star"),
        ("obmt_ns", "int64", "ns", "observation time"),
        ("solve_job", "int64", "", "job of the gsr.solve that wrote it"),
        ("residual_mas", "float64", "mas", "observed − computed after the solve"),
        ("normalised", "float64", "", "residual / σ"),
    ],
    description="Post-fit residuals of the observations a GSR solve used",
    time_column="obmt_ns",
)
data_type(
    "gsr_report",
    1,
    [
        ("section", "string", "", "convergence | residuals | solution | truth | plot"),
        ("quantity", "string", "", "what is measured"),
        ("value", "float64", "", "value (NaN for text)"),
        ("unit", "string", "", "unit"),
        ("note", "string", "", "text value or remark"),
    ],
    description="Report of a GSR solution",
)


class SolveConfig(BaseModel, extra="forbid"):
    """Parameters of ``gsr.solve``."""

    atol: float = Field(1e-10, gt=0, description="LSQR's least-squares stopping tolerance")
    btol: float = Field(1e-10, gt=0, description="LSQR's compatible-system tolerance")
    iter_lim: int | None = Field(None, ge=1, description="default: twice the unknowns")
    checkpoint_every: int = Field(100, ge=1, description="iterations between checkpoints")
    checkpoint_seconds: float = Field(600.0, gt=0, description="or seconds, if sooner")
    precondition: Literal["stars", "columns", "none"] = "stars"
    errors: Literal["schur", "none"] = Field(
        "schur", description="attitude/instrument/global errors: exact (dense) or none"
    )
    solve_gamma: bool = Field(True, description="solve for PPN γ − 1")
    instrument_terms: list[int] | None = Field(
        None, description="positions 0-5 of the rows' instrument terms to solve; None: all"
    )
    knot_s: float | None = Field(None, gt=0, description="attitude knot spacing; None: fitted")
    min_star_rcond: float = Field(1e-9, ge=0, description="drop stars with a worse 5×5 block")
    min_star_rows: int = Field(10, ge=0, description="drop stars with fewer observations")
    log_every: int = Field(50, ge=1, description="iterations between progress lines")
    ranks: int = Field(
        1,
        ge=1,
        description="MPI ranks: above 1 the solve runs under mpiexec, rows split by star "
        "(give the step `cores` = ranks, so the node reserves a slot per rank)",
    )
    device: Literal["cpu", "gpu", "auto"] = Field(
        "auto",
        description="where the row pass runs (1 rank): 'auto' uses a CUDA GPU when CuPy "
        "sees one, else the CPU; 'cpu' always gives the reference arithmetic",
    )
    iteration_delay_s: float = Field(
        0.0,
        ge=0,
        description="tests and demos only: sleep after each iteration, so that a small "
        "solve lasts long enough to be interrupted",
    )


class _Progress:
    """The solver's callback: progress lines, and a convergence history that survives.

    The history is saved next to the checkpoint whenever the solver saves one (every
    ``checkpoint_every`` iterations), so that the attempt that resumes keeps the rows of
    the attempt that died and the product covers every iteration.
    """

    def __init__(self, path: Path, config: SolveConfig, log: logging.Logger) -> None:
        self.path = path
        self.config = config
        self.log = log
        self.rows: list[tuple[float, ...]] = []
        self.start: int | None = None

    def __call__(self, info: IterationInfo) -> None:
        if self.start is None:
            self.start = info.itn - 1
            if self.start > 0:
                self.log.info("resumed from the checkpoint at iteration %d", self.start)
                self.rows = [r for r in self._load() if r[0] <= self.start]
        row = (
            info.itn, self.start, info.r1norm, info.r1norm, info.arnorm, info.anorm,
            info.acond, info.test1, info.test2, info.seconds,
        )  # fmt: skip
        self.rows.append(row)
        if info.itn % self.config.log_every == 0 or info.itn == 1:
            self.log.info(
                "iteration %d/%d: |r|=%.6e |A'r|=%.3e test1=%.2e test2=%.2e (%.1f s)",
                info.itn, info.iter_lim, info.r1norm, info.arnorm, info.test1, info.test2,
                info.seconds,
            )  # fmt: skip
        if info.itn % self.config.checkpoint_every == 0:
            self._save()
        if self.config.iteration_delay_s:
            time.sleep(self.config.iteration_delay_s)

    def _load(self) -> list[tuple[float, ...]]:
        if not self.path.exists():
            return []
        try:
            with np.load(self.path) as z:
                return [tuple(r) for r in z["rows"].tolist()]
        except (OSError, ValueError, KeyError):
            self.log.warning("convergence history %s unreadable; starting it afresh", self.path)
            return []

    def _save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, rows=np.array(self.rows, dtype=np.float64).reshape(-1, 10))
        os.replace(tmp, self.path)

    def table(self, job: int) -> pa.Table:
        a = np.array(self.rows, dtype=np.float64).reshape(-1, 10)
        names = ["iteration", "attempt_start", "r1norm", "r2norm", "arnorm", "anorm"]
        names += ["acond", "test1", "test2", "seconds"]
        cols: dict[str, object] = {n: a[:, k] for k, n in enumerate(names)}
        cols["iteration"] = a[:, 0].astype(np.int64)
        cols["attempt_start"] = a[:, 1].astype(np.int64)
        cols["solve_job"] = np.full(a.shape[0], job, np.int64)
        return pa.table(cols)


@task(
    "gsr.solve",
    inputs={"observations": "gsr_observations", "catalogue": "gsr_reference_catalogue"},
    outputs={
        "astrometric": "gsr_solution_astrometric",
        "attitude": "gsr_solution_attitude",
        "instrument": "gsr_solution_instrument",
        "convergence": "gsr_convergence",
        "summary": "gsr_summary",
        "residuals": "gsr_residuals",
    },
    config=SolveConfig,
    max_attempts=3,
)
def gsr_solve(
    observations: pa.Table,
    catalogue: pa.Table,
    config: SolveConfig,
    spec: DataSpec,
    log: logging.Logger,
    scratch: Path,
    job: JobContext,
) -> dict[str, pa.Table]:
    """Solve the GSR system of the range's observations, resuming from the job's checkpoint."""
    if observations.num_rows == 0:
        raise NoData(f"no gsr_observations in {spec}")
    key = f"job-{job.job_id}"  # the checkpoint's name: the same for every attempt
    try:
        inp = adapt(
            observations,
            catalogue,
            solve_gamma=config.solve_gamma,
            knot_ns=None if config.knot_s is None else round(config.knot_s * 1e9),
            instrument_terms=None
            if config.instrument_terms is None
            else tuple(config.instrument_terms),
            min_star_rcond=config.min_star_rcond,
            min_star_rows=config.min_star_rows,
        )
    except GsrInputError as err:
        raise PermanentTaskError(f"bad GSR input: {err}") from err
    system = inp.system
    lay = system.layout
    log.info(
        "system: %d rows (%d given, %d left out with %d stars), %d stars, %d attitude "
        "coefficients per axis (knots every %.1f s), %d instrument and %d global unknowns, "
        "%d constraint equations; epoch OBMT %d",
        system.n_rows, inp.n_rows_in, inp.dropped_rows, inp.dropped_sources.size,
        lay.n_stars, lay.n_att, inp.knot_ns / 1e9, lay.n_instr, lay.n_glob,
        system.n_constraints, inp.epoch_obmt_ns,
    )  # fmt: skip
    ckpt = checkpoint_path(scratch, key)
    history = ckpt.with_name(ckpt.name.replace(".ckpt.npz", ".history.npz"))
    progress = _Progress(history, config, log)
    kwargs = dict(
        atol=config.atol,
        btol=config.btol,
        iter_lim=config.iter_lim,
        precondition=config.precondition,
        checkpoint=ckpt,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        callback=progress,
    )
    if config.ranks > 1:
        result = _solve_mpi(system, config, scratch, ckpt, progress, log)
    else:
        result = _solve_here(system, config, kwargs, ckpt, progress, log)
    log.info(
        "LSQR stopped after %d iterations (%d in this attempt, resumed from %d): %s; "
        "|r|=%.6e, unit-weight error %.4f, %.4f s per iteration",
        result.itn, result.iterations_this_attempt, result.resumed_from, result.reason,
        result.r1norm, result.unit_weight_error, result.seconds_per_iteration,
    )  # fmt: skip
    if result.istop == 7:
        log.warning("the iteration limit was reached before the tolerances: raise iter_lim")
    return _products(inp, result, _sigma(system, result, config.errors, log), progress, job.job_id)


def _solve_here(
    system: GsrSystem,
    config: SolveConfig,
    kwargs: dict[str, object],
    ckpt: Path,
    progress: _Progress,
    log: logging.Logger,
) -> LsqrResult:
    """Solve in this process (CPU or GPU), resuming from the job's checkpoint."""
    kwargs["device"] = config.device
    try:
        try:
            return solve(system, **kwargs)  # type: ignore[arg-type]
        except CheckpointMismatchError as err:
            # the job's inputs changed between attempts (a dataset was added or
            # retracted): the old state belongs to another problem
            log.warning("%s; starting afresh", err)
            ckpt.replace(ckpt.with_suffix(".stale"))
            progress.path.unlink(missing_ok=True)
            progress.rows.clear()
            progress.start = None
            return solve(system, **kwargs)  # type: ignore[arg-type]
    except GsrInputError as err:
        raise PermanentTaskError(f"bad GSR input: {err}") from err


def _solve_mpi(
    system: GsrSystem,
    config: SolveConfig,
    scratch: Path,
    ckpt: Path,
    progress: _Progress,
    log: logging.Logger,
) -> LsqrResult:
    """Solve under ``mpiexec -n ranks``: each rank reads only its stars' rows.

    The node gave this job ``cores`` slots; the ranks run one thread each. Checkpoints are
    per rank beside the job's own, so a retried MPI solve resumes too.
    """
    folder = save_system(system, scratch / "mpi-system")
    try:
        solution = run_mpi(
            folder,
            scratch / "mpi-solution.pickle",
            ranks=config.ranks,
            atol=config.atol,
            btol=config.btol,
            iter_lim=config.iter_lim,
            checkpoint=ckpt,
            checkpoint_every=config.checkpoint_every,
        )
    except MpiError as err:
        if "GsrInputError" in str(err) or "bad GSR input" in str(err):
            raise PermanentTaskError(str(err)) from err
        raise
    for rank, (first, last) in enumerate(solution.rank_rows):
        log.info("MPI rank %d of %d held rows [%d, %d)", rank, config.ranks, first, last)
    for info in solution.iterations:
        progress(info)
    shutil.rmtree(folder, ignore_errors=True)
    return solution.result


def _sigma(system: GsrSystem, result: LsqrResult, method: str, log: logging.Logger) -> np.ndarray:
    """Standard errors; a solution without its shared errors beats no solution after hours.

    The dense Schur complement is refused above SCHUR_MAX_SHARED shared unknowns and
    fails when they are not all determined; then the attitude, instrument and global
    errors are NaN, with a warning, and the astrometric ones (star blocks) remain.
    """
    t0 = time.perf_counter()
    if method == "schur" and system.layout.n_shared > SCHUR_MAX_SHARED:
        log.warning(
            "%d shared unknowns: too many for the dense Schur errors (%d); their errors "
            "are left NaN", system.layout.n_shared, SCHUR_MAX_SHARED,
        )  # fmt: skip
        method = "none"
    try:
        sigma = standard_errors(system, result, method=method).sigma
    except np.linalg.LinAlgError as err:
        log.warning("Schur errors failed (%s): attitude/instrument/global errors left NaN", err)
        sigma = standard_errors(system, result, method="none").sigma
    log.info("standard errors (%s) in %.2f s", method, time.perf_counter() - t0)
    return sigma


def _products(
    inp: GsrInput,
    result: LsqrResult,
    sigma: np.ndarray,
    progress: _Progress,
    job: int,
) -> dict[str, pa.Table]:
    system = inp.system
    lay = system.layout
    x = result.x
    astro, astro_s = lay.astrometric(x), lay.astrometric(sigma)
    n_obs = np.bincount(system.star, minlength=lay.n_stars).astype(np.int64)
    cols: dict[str, object] = {
        "source_id": inp.source_id,
        "solve_job": np.full(lay.n_stars, job, np.int64),
        "n_obs": n_obs,
    }
    cols |= {f"delta_{n}": astro[:, k] for k, n in enumerate(_ASTRO)}
    cols |= {f"sigma_{n}": astro_s[:, k] for k, n in enumerate(_ASTRO)}
    att, att_s = lay.attitude(x), lay.attitude(sigma)
    attitude = {
        "coeff_index": inp.coeff_index,
        "obmt_ns": inp.knot_origin_ns + (np.arange(lay.n_att) - 1) * inp.knot_ns,
        "solve_job": np.full(lay.n_att, job, np.int64),
    }
    attitude |= {f"theta_{a}_mas": att[:, k] for k, a in enumerate("xyz")}
    attitude |= {f"sigma_{a}_mas": att_s[:, k] for k, a in enumerate("xyz")}
    instrument = {
        "parameter": ["instrument"] * lay.n_instr + ["gamma_minus_one"] * lay.n_glob,
        "column": np.concatenate([inp.instr_column, np.full(lay.n_glob, -1)]).astype(np.int32),
        "solve_job": np.full(lay.n_instr + lay.n_glob, job, np.int64),
        "value": np.concatenate([lay.instrument(x), lay.glob(x)]),
        "sigma": np.concatenate([lay.instrument(sigma), lay.glob(sigma)]),
    }
    weighted = system.rhs * system.inv_sigma - matvec(system, x)[: system.n_rows]
    residual = weighted / system.inv_sigma
    residuals = {
        "obs_id": inp.obs_id,
        "source_id": inp.source_id[system.star],
        "obmt_ns": inp.obmt_ns,
        "solve_job": np.full(system.n_rows, job, np.int64),
        "residual_mas": residual,
        "normalised": weighted,
    }
    numbers: list[tuple[str, float, str]] = [
        ("rows", system.n_rows, ""),
        ("rows_given", inp.n_rows_in, ""),
        ("rows_left_out", inp.dropped_rows, "with stars too poorly observed"),
        ("stars", lay.n_stars, ""),
        ("stars_left_out", inp.dropped_sources.size, ""),
        ("attitude_coefficients", lay.n_att, "per axis"),
        ("instrument_unknowns", lay.n_instr, ""),
        ("global_unknowns", lay.n_glob, ""),
        ("unknowns", lay.n_unknowns, ""),
        ("constraints", system.n_constraints, ""),
        ("knot_ns", inp.knot_ns, ""),
        ("epoch_obmt_ns", inp.epoch_obmt_ns, "reference epoch of the astrometric parameters"),
        ("iterations", result.itn, ""),
        ("resumed_from", result.resumed_from, "iteration this attempt started from"),
        ("istop", result.istop, result.reason),
        ("r1norm", result.r1norm, ""),
        ("arnorm", result.arnorm, ""),
        ("acond", result.acond, ""),
        ("unit_weight_error", result.unit_weight_error, "sqrt(chi^2 / dof)"),
        ("seconds", result.seconds, "LSQR wall time of the last attempt"),
    ]
    summary = {
        "name": [n for n, _, _ in numbers],
        "solve_job": np.full(len(numbers), job, np.int64),
        "value": np.array([v for _, v, _ in numbers], np.float64),
        "text": [t for _, _, t in numbers],
    }
    return {
        "astrometric": pa.table(cols),
        "attitude": pa.table(attitude),
        "instrument": pa.table(instrument),
        "convergence": progress.table(job),
        "summary": pa.table(summary),
        "residuals": pa.table(residuals),
    }


class ReportConfig(BaseModel, extra="forbid"):
    """Parameters of ``gsr.report``."""

    plot: bool = Field(True, description="write a PNG next to the job log")
    max_unit_weight_error: float = Field(
        1.2, gt=0, description="flag solutions whose sqrt(chi^2/dof) exceeds this"
    )


@task(
    "gsr.report",
    inputs={
        "summary": "gsr_summary",
        "convergence": "gsr_convergence",
        "astrometric": "gsr_solution_astrometric",
        "residuals": "gsr_residuals",
        "catalogue": "gsr_reference_catalogue",
        "truth": "gsr_astrometric_truth",
    },
    outputs={"report": "gsr_report"},
    config=ReportConfig,
)
def gsr_report(
    summary: pa.Table,
    convergence: pa.Table,
    astrometric: pa.Table,
    residuals: pa.Table,
    catalogue: pa.Table,
    truth: pa.Table,
    config: ReportConfig,
    log: logging.Logger,
    job: JobContext,
) -> pa.Table:
    """Convergence, residuals, change from the previous solve and (with a truth) pulls."""
    if summary.num_rows == 0:
        raise NoData("no GSR solution in this range")
    solved_by = int(np.max(summary.column("solve_job").to_numpy()))
    pick = {
        name: report.latest(table, solved_by)
        for name, table in (
            ("summary", summary),
            ("convergence", convergence),
            ("astrometric", astrometric),
            ("residuals", residuals),
        )
    }
    earlier = [
        int(j) for j in np.unique(astrometric.column("solve_job").to_numpy()) if int(j) < solved_by
    ]
    previous = report.latest(astrometric, max(earlier)) if earlier else None
    plot_path = None
    if config.plot:
        plot_path = job.report_path("gsr_report.png")
    rows = report.make_report(
        pick["summary"],
        pick["convergence"],
        pick["astrometric"],
        pick["residuals"],
        catalogue,
        truth,
        max_unit_weight_error=config.max_unit_weight_error,
        plot_path=plot_path,
        previous=previous,
    )
    if plot_path is not None:
        log.info("plot of solve job %d written to %s", solved_by, plot_path)
    return rows


__all__ = ["WORKFLOWS", "ReportConfig", "SolveConfig", "gsr_report", "gsr_solve"]
