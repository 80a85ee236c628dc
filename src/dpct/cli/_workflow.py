"""``dpct workflow`` and ``dpct job``: the RMS console in a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from dpct.cli._context import database
from dpct.cli._options import PRIORITY_HELP, at_least, one_of
from dpct.cli._progress import watch
from dpct.cli._render import console, emit_json, status, table, when
from dpct.datamodel import DataSpec, parse_duration_ns
from dpct.errors import BadInput, WorkFailed
from dpct.storage import JobStatus, WorkflowStatus
from dpct.workflows import service

workflow_app = typer.Typer(help="Workflows: register, submit, list, resume, reprioritise, cancel.")
job_app = typer.Typer(help="Jobs: list, show, logs.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HowMany = Annotated[
    int, typer.Option("--how-many", "-n", help="How many rows.", callback=at_least(1))
]
Page = Annotated[int, typer.Option(help="Page of jobs (0-based).", callback=at_least(0))]
JobStatusFilter = Annotated[
    str | None,
    typer.Option(
        "--status", help="Only jobs in this status.", callback=one_of("job status", JobStatus)
    ),
]


def _spec(
    data_type: str, day: int | None, days: int, start: str | None, end: str | None
) -> DataSpec:
    if day is not None:
        return service.day_spec(data_type, day, day + days - 1)
    if start is None or end is None:
        raise BadInput("give the data to process: --day N [--days K], or --start and --end")
    return DataSpec(data_type, parse_duration_ns(start), parse_duration_ns(end))


@workflow_app.command("register")
def register(
    files: Annotated[list[Path], typer.Argument(help="Descriptor files (.toml/.yaml/.json).")],
    as_json: Json = False,
) -> None:
    """Validate descriptors and store them as new versions."""
    db = database()
    rows = [service.register_descriptor(db, f) for f in files]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        console.print(f"registered {row.name} version {row.version} (from {row.source})")


@workflow_app.command("install")
def install(
    pipelines: Annotated[
        list[str] | None, typer.Argument(help="Shipped pipelines; none lists them.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Register the workflows a shipped pipeline carries (e.g. ``ingest``)."""
    if not pipelines:
        shipped = service.shipped_pipelines()
        if as_json:
            emit_json({k: str(v) for k, v in shipped.items()})
            return
        table("shipped pipelines", ["pipeline", "descriptors"], sorted(shipped.items()))
        return
    db = database()
    rows = [row for name in pipelines for row in service.install_pipeline(db, name)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        console.print(f"registered {row.name} version {row.version}")


@workflow_app.command("submit")
def submit(
    name: str,
    day: Annotated[
        int | None, typer.Option(help="OBMT day to process.", callback=at_least(0))
    ] = None,
    days: Annotated[int, typer.Option(help="Number of days from --day.", callback=at_least(1))] = 1,
    start: Annotated[str | None, typer.Option(help="OBMT start (ns or e.g. '3d').")] = None,
    end: Annotated[str | None, typer.Option(help="OBMT end, exclusive.")] = None,
    priority: Annotated[
        int | None,
        typer.Option(help=f"Override the descriptor's. {PRIORITY_HELP}", callback=at_least(0)),
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Descriptor version (default latest).", callback=at_least(1))
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until it ends (with progress unless --json); exit 6 unless it succeeded.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Start a workflow over a DataSpec (the coordinator and nodes run it).

    With --wait the exit code tells how it ended: 0 SUCCESS, 6 FAILED, PARTIALLYSUCCESS
    or CANCELLED.
    """
    db = database()
    descriptor = service.descriptor_of(service.get_descriptor(db, name, version))
    spec = _spec(descriptor.data_type, day, days, start, end)
    wf = service.submit(db, name, spec, priority=priority, version=version)
    if wait:
        watch(db, lambda: [service.workflow(db, wf)], quiet=as_json)
    view = service.workflow(db, wf)
    if as_json:
        emit_json(view)
    else:
        console.print(
            f"workflow {wf} {name} submitted over {spec.text}: {view.workflow.n_jobs} jobs"
        )
    if wait and view.workflow.status != "SUCCESS":
        raise WorkFailed(
            f"workflow {wf} {name} ended {view.workflow.status} ({_counts(view.counts)}); "
            f"see `dpct job list {wf} --status FAILED` and `dpct job logs JOBID`"
        )


@workflow_app.command("list")
def list_(
    history: Annotated[bool, typer.Option("--history", help="Ended workflows only.")] = False,
    how_many: HowMany = 500,
    name: Annotated[str | None, typer.Option(help="Only this workflow name.")] = None,
    status_: Annotated[
        str | None,
        typer.Option(
            "--status", help="Only this status.", callback=one_of("workflow status", WorkflowStatus)
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Recent workflows, newest first (or --history)."""
    views = service.workflows(
        database(), history=history, how_many=how_many, name=name, status=status_
    )
    if as_json:
        emit_json(views)
        return
    table(
        "Workflows (History)" if history else "Workflows (Recent)",
        [
            "NAME",
            "ID",
            "STATUS",
            "PERSISTENCEID",
            "RUNID",
            "TRANSFERID",
            "JOBS",
            "DATASPEC",
            "STARTTIME",
            "ENDTIME",
        ],
        (
            (
                v.workflow.name,
                v.workflow.id,
                status(v.workflow.status),
                v.workflow.persistence_id,
                v.workflow.run_id,
                v.workflow.transfer_id,
                _counts(v.counts),
                v.workflow.spec.short,
                when(v.workflow.started_at),
                when(v.workflow.ended_at),
            )
            for v in views
        ),
    )


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"


@workflow_app.command("show")
def show(
    workflow_id: int,
    page: Page = 0,
    page_size: Annotated[int, typer.Option(help="Jobs per page.", callback=at_least(1))] = 50,
    status_: JobStatusFilter = None,
    as_json: Json = False,
) -> None:
    """A workflow with its per-status counts and a page of its jobs."""
    db = database()
    view = service.workflow(db, workflow_id)
    jobs = service.jobs(db, workflow_id, page=page, page_size=page_size, status=status_)
    if as_json:
        emit_json({"workflow": view.workflow, "counts": view.counts, "jobs": jobs})
        return
    w = view.workflow
    console.print(
        Text.assemble(
            (w.name, "bold"),
            f" ID {w.id} ",
            status(w.status),
            f" PERSISTENCEID {w.persistence_id} priority {w.priority} trigger '{w.trigger}'\n"
            f"{w.spec.text}\njobs: {_counts(view.counts)}",
        )
    )
    _job_table(jobs, title=f"Jobs (page {page})")


def _job_table(jobs, title: str) -> None:
    table(
        title,
        [
            "ID",
            "STATUS",
            "SOLUTIONID",
            "LOGS",
            "DATASPECTEXT",
            "TASKTYPE",
            "PRIORITY",
            "ATTEMPTS",
            "NODE",
            "STARTTIME",
            "ENDTIME",
        ],
        (
            (
                j.id,
                status(j.status),
                j.solution_id,
                "log" if j.log_path else "",
                j.spec.short,
                j.task_type,
                j.priority,
                f"{j.attempts}/{j.max_attempts}",
                j.node,
                when(j.started_at),
                when(j.ended_at),
            )
            for j in jobs
        ),
    )


@workflow_app.command("resume")
def resume(workflow_id: int, as_json: Json = False) -> None:
    """Resume failed jobs: re-run FAILED jobs and their UPSTREAM_FAILED descendants."""
    result = service.resume(database(), workflow_id)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"workflow {workflow_id}: {result['failed']} failed and "
        f"{result['upstream_failed']} upstream-failed jobs queued again"
    )


# "-5" must reach the range check (and its clear line) instead of reading as an option.
@workflow_app.command("priority", context_settings={"ignore_unknown_options": True})
def priority(
    workflow_id: int,
    value: Annotated[
        int, typer.Argument(metavar="PRIORITY", help=PRIORITY_HELP, callback=at_least(0))
    ],
    as_json: Json = False,
) -> None:
    """Change jobs priority (higher runs first) of the workflow's jobs not yet started."""
    changed = service.change_priority(database(), workflow_id, value)
    if as_json:
        emit_json({"workflow": workflow_id, "priority": value, "jobs_changed": changed})
        return
    console.print(f"workflow {workflow_id}: priority {value} for {changed} jobs")


@workflow_app.command("cancel")
def cancel(workflow_id: int, as_json: Json = False) -> None:
    """Cancel queued jobs and terminate running ones."""
    counts = service.cancel(database(), workflow_id)
    if as_json:
        emit_json(counts)
        return
    console.print(
        f"workflow {workflow_id} cancelled: {counts.get('QUEUED', 0) + counts.get('WAITING', 0)} "
        f"queued and {counts.get('RUNNING', 0)} running jobs"
    )


@workflow_app.command("backfill")
def backfill(
    name: str,
    first_day: Annotated[
        int, typer.Option("--from-day", help="First OBMT day.", callback=at_least(0))
    ],
    last_day: Annotated[
        int, typer.Option("--to-day", help="Last OBMT day (inclusive).", callback=at_least(0))
    ],
    force: Annotated[bool, typer.Option(help="Also days that already ran.")] = False,
    as_json: Json = False,
) -> None:
    """One workflow per day over a range of days, skipping days already processed."""
    started = service.backfill(database(), name, first_day, last_day, force=force)
    if as_json:
        emit_json({"workflows": started})
        return
    skipped = last_day - first_day + 1 - len(started)
    console.print(f"{len(started)} workflows started ({skipped} days skipped): {started}")


@job_app.command("list")
def job_list(
    workflow_id: int,
    status_: JobStatusFilter = None,
    page: Page = 0,
    page_size: Annotated[int, typer.Option(help="Jobs per page.", callback=at_least(1))] = 100,
    as_json: Json = False,
) -> None:
    """Jobs of a workflow."""
    jobs = service.jobs(database(), workflow_id, page=page, page_size=page_size, status=status_)
    if as_json:
        emit_json(jobs)
        return
    _job_table(jobs, title=f"Jobs of workflow {workflow_id}")


@job_app.command("show")
def job_show(job_id: int, as_json: Json = False) -> None:
    """One job, with its error and the jobs it depends on."""
    job, upstream = service.job(database(), job_id)
    if as_json:
        emit_json({"job": job, "upstream": upstream})
        return
    _job_table([job], title=f"Job {job_id}")
    console.print(f"step {job.step}; params {job.params}; depends on {upstream or 'nothing'}")
    if job.error_class:
        console.print(Text.assemble((job.error_class, "red"), f": {job.error_message}"))
    if job.log_path:
        console.print(f"log: {job.log_path}")


@job_app.command("logs")
def job_logs(job_id: int) -> None:
    """Print a job's log."""
    console.print(service.job_log(database(), job_id), markup=False, highlight=False)
