"""``dpct run``, ``dpct closure`` and ``dpct retract``: the Data Management console."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from dpct.cli._context import database
from dpct.cli._options import at_least
from dpct.cli._progress import watch
from dpct.cli._render import console, emit_json, status, table, when
from dpct.datamanagement import service
from dpct.datamodel import NS_PER_DAY, parse_duration_ns
from dpct.errors import BadInput, DpctError
from dpct.storage import Database, DatasetRow, Problem, RunCheckErrorRow, RunCheckRow, RunRow
from dpct.workflows import service as rms

run_app = typer.Typer(help="Runs: a pipeline's processing of an OBMT range, and its workflows.")
closure_app = typer.Typer(help="Run check closure: gaps and overlaps between runs; closing them.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Sw = Annotated[str, typer.Option("--sw", help="The pipeline: AIM, BAM or GSR.")]
Day = Annotated[int | None, typer.Option(help="First OBMT day of the range.", callback=at_least(0))]
Days = Annotated[int, typer.Option(help="Number of days from --day.", callback=at_least(1))]
HowMany = Annotated[
    int, typer.Option("--how-many", "-n", help="How many rows.", callback=at_least(1))
]
Start = Annotated[str | None, typer.Option(help="OBMT start: ns, or e.g. '4774d'.")]
End = Annotated[str | None, typer.Option(help="OBMT end, exclusive: ns, or e.g. '4775d'.")]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change, and change nothing.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


def confirm(action: str, yes: bool) -> None:
    """Ask before an action that destroys data, unless ``--yes``; refuse when nobody can answer.

    Without a terminal on stdin (cron, CI, a pipe) there is nobody to ask: waiting for
    an answer would hang, and taking silence for yes would destroy data unasked.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(
            f"{action}: stdin is not a terminal, so nothing was asked and nothing changed; "
            "pass --yes to go ahead, or --dry-run to see the plan"
        )
    if not typer.confirm(f"{action}. Go ahead?", default=False):
        console.print("nothing changed")
        raise typer.Exit(1)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _range(day: int | None, days: int, start: str | None, end: str | None) -> tuple[int, int]:
    if day is not None:
        if start is not None or end is not None:
            raise BadInput("give either --day [--days] or --start and --end, not both")
        return day * NS_PER_DAY, (day + days) * NS_PER_DAY
    if start is None or end is None:
        raise BadInput("give the OBMT range: --day N [--days K], or --start and --end")
    return parse_duration_ns(start), parse_duration_ns(end)


def _days(start_ns: int, end_ns: int) -> str:
    """Day numbers when the range is whole days: operators think in OBMT days."""
    if start_ns % NS_PER_DAY or end_ns % NS_PER_DAY:
        return ""
    first, last = start_ns // NS_PER_DAY, end_ns // NS_PER_DAY - 1
    return f"day {first}" if first == last else f"days {first}-{last}"


def _run_table(title: str, rows: list[RunRow]) -> None:
    table(
        title,
        [
            "IDENTIFIER",
            "SW",
            "STATUS",
            "CLOSED",
            "IGNORED",
            "WORKFLOWIDS",
            "START",
            "END",
            "DAYS",
            "CREATED",
            "ENDED",
            "NOTE",
        ],
        (
            (
                r.id,
                r.sw,
                status(r.status),
                r.closed,
                r.ignored,
                ",".join(map(str, r.workflow_ids)),
                r.obmt_start_ns,
                r.obmt_end_ns,
                _days(r.obmt_start_ns, r.obmt_end_ns),
                when(r.created_at),
                when(r.ended_at),
                r.note,
            )
            for r in rows
        ),
    )


@run_app.command("list")
def run_list(
    sw: Annotated[str | None, typer.Option("--sw", help="Only this pipeline.")] = None,
    how_many: HowMany = 500,
    as_json: Json = False,
) -> None:
    """Runs, newest first, with the status their workflows imply now."""
    rows = service.runs(database(), sw=sw, how_many=how_many)
    if as_json:
        emit_json(rows)
        return
    _run_table("Runs", rows)


@run_app.command("aim")
def run_aim(
    how_many: HowMany = 100,
    as_json: Json = False,
) -> None:
    """The AimRun table: AIM runs, what they processed, what is left, what they produced."""
    rows = service.aim_runs(database(), how_many=how_many)
    if as_json:
        emit_json(rows)
        return
    table(
        "AimRun",
        [
            "IDENTIFIER",
            "STATUS",
            "CLOSED",
            "WORKFLOWIDS",
            "ACTIVEPROCESSING",
            "SOLUTIONID",
            "SOLUTIONIDSPROCESSED",
            "SOLUTIONIDSTOBEPROCESSED",
        ],
        (
            (
                r.run.id,
                status(r.run.status),
                r.run.closed,
                ",".join(map(str, r.run.workflow_ids)),
                r.active_processing,
                r.solution_id if r.solution_id is not None else "",
                ",".join(map(str, r.solution_ids_processed)),
                ",".join(map(str, r.solution_ids_to_be_processed)),
            )
            for r in rows
        ),
    )


@run_app.command("show")
def run_show(run_id: int, as_json: Json = False) -> None:
    """A run and its workflows."""
    db = database()
    row = service.run(db, run_id)
    views = [rms.workflow(db, wf) for wf in row.workflow_ids]
    if as_json:
        emit_json({"run": row, "workflows": views})
        return
    _run_table(f"Run {run_id}", [row])
    if not views:
        return
    table(
        "Workflows",
        ["NAME", "ID", "STATUS", "DATASPEC", "STARTTIME", "ENDTIME"],
        (
            (
                v.workflow.name,
                v.workflow.id,
                status(v.workflow.status),
                v.workflow.spec.short,
                when(v.workflow.started_at),
                when(v.workflow.ended_at),
            )
            for v in views
        ),
    )


@run_app.command("create")
def run_create(
    sw: Sw,
    day: Day = None,
    days: Days = 1,
    start: Start = None,
    end: End = None,
    workflow: Annotated[
        list[int] | None, typer.Option("--workflow", "-w", help="A workflow of the run (repeat).")
    ] = None,
    note: Annotated[str, typer.Option(help="A note kept with the run.")] = "",
    as_json: Json = False,
) -> None:
    """Define a run of a pipeline over an OBMT range."""
    start_ns, end_ns = _range(day, days, start, end)
    row = service.create_run(
        database(), sw, start_ns, end_ns, note=note, workflow_ids=workflow or ()
    )
    if as_json:
        emit_json(row)
        return
    console.print(
        f"run {row.id} {row.sw} [{row.obmt_start_ns}, {row.obmt_end_ns}) {row.status}"
        + (f" with workflows {', '.join(map(str, row.workflow_ids))}" if row.workflow_ids else "")
    )


@run_app.command("attach")
def run_attach(
    run_id: int,
    workflow_ids: Annotated[list[int], typer.Argument(help="Workflow ids.")],
    as_json: Json = False,
) -> None:
    """Make workflows part of a run; its status then follows theirs."""
    row = service.attach_workflows(database(), run_id, workflow_ids)
    if as_json:
        emit_json(row)
        return
    console.print(f"run {run_id} {row.status}: workflows {', '.join(map(str, row.workflow_ids))}")


@run_app.command("status")
def run_status(run_id: int, value: str, as_json: Json = False) -> None:
    """Set the status of a run without workflows (DEFINED, RUNNING, ..., SUCCESS, FAILED)."""
    row = service.set_run_status(database(), run_id, value.upper())
    if as_json:
        emit_json(row)
        return
    console.print(f"run {run_id} {row.status}")


@run_app.command("ignore")
def run_ignore(
    run_id: int,
    undo: Annotated[bool, typer.Option("--undo", help="Take the run into account again.")] = False,
    note: Annotated[str, typer.Option(help="Why (replaces the run's note).")] = "",
    as_json: Json = False,
) -> None:
    """Ignore solution: leave a run out of run check closure (or --undo)."""
    row = service.ignore_run(database(), run_id, ignored=not undo, note=note)
    if as_json:
        emit_json(row)
        return
    console.print(f"run {run_id} {'ignored' if row.ignored else 'no longer ignored'}")


@run_app.command("reopen")
def run_reopen(
    run_id: int,
    reason: Annotated[str, typer.Option(help="Why; kept in the run's note and the event log.")],
    as_json: Json = False,
) -> None:
    """Reopen a closed run (the way out of a wrong closure): later work joins it again.

    What closure deleted stays deleted; the command lists it.
    """
    result = service.reopen_run(database(), run_id, reason=reason)
    if as_json:
        emit_json(result)
        return
    console.print(f"run {run_id} reopened, {result.run.status}")
    if result.lost:
        console.print(
            f"{len(result.lost)} intermediate datasets deleted by closure cannot be recovered:"
        )
        _dataset_table("Lost to closure", result.lost)


def _check_table(title: str, rows: list[RunCheckRow]) -> None:
    table(
        title,
        [
            "Id",
            "Sw",
            "Start_check",
            "End_check",
            "Days",
            "Check_status",
            "Delete_status",
            "Created",
            "Note",
        ],
        (
            (
                c.id,
                c.sw,
                c.start_check_ns,
                c.end_check_ns,
                _days(c.start_check_ns, c.end_check_ns),
                status(c.check_status),
                c.delete_status,
                when(c.created_at),
                c.note,
            )
            for c in rows
        ),
    )


def _error_table(check_id: int, rows: list[RunCheckErrorRow]) -> None:
    table(
        f"Table error view (check {check_id})",
        ["KIND", "START", "END", "DURATION_S", "RUNIDS"],
        (
            (
                e.kind,
                e.obmt_start_ns,
                e.obmt_end_ns,
                f"{(e.obmt_end_ns - e.obmt_start_ns) / 1e9:g}",
                ",".join(map(str, e.run_ids)),
            )
            for e in rows
        ),
    )


def _dataset_table(title: str, rows: list[DatasetRow]) -> None:
    table(
        title,
        ["ID", "TYPE", "DATASPEC", "STATE", "BYTES", "LOCATION"],
        ((d.id, d.spec.data_type, d.spec.text, status(d.state), d.bytes, d.location) for d in rows),
    )


def _problem_table(rows: list[Problem]) -> None:
    table(
        "Would block closure",
        ["KIND", "START", "END", "DURATION_S", "RUNIDS"],
        (
            (
                p.kind,
                p.start_ns,
                p.end_ns,
                f"{(p.end_ns - p.start_ns) / 1e9:g}",
                ",".join(map(str, p.run_ids)),
            )
            for p in rows
        ),
    )


def _plan_json(plan: service.ClosurePlan) -> dict[str, Any]:
    return {
        "ok": plan.ok,
        "closing": plan.closing,
        "bytes": plan.bytes,
        "by_type": {t: {"datasets": n, "bytes": b} for t, (n, b) in plan.by_type().items()},
    }


def _show_closure_plan(plan: service.ClosurePlan) -> None:
    _run_table("Runs in the range", plan.runs)
    if plan.problems:
        _problem_table(plan.problems)
        console.print("the check would fail: nothing would be closed or deleted")
        return
    if plan.forced:
        runs = sorted({i for p in plan.forced for i in p.run_ids})
        console.print(f"--force: incomplete runs {', '.join(map(str, runs))} would close too")
    table(
        "Would be deleted",
        ["TYPE", "DATASETS", "BYTES"],
        [(t, n, _size(b)) for t, (n, b) in plan.by_type().items()]
        + [("total", len(plan.deleting), _size(plan.bytes))],
    )
    console.print(
        f"would close runs {', '.join(map(str, plan.closing)) or '(none)'} and delete "
        f"{len(plan.deleting)} intermediate datasets ({_size(plan.bytes)})"
    )


@closure_app.command("check")
def closure_check(
    sw: Sw,
    day: Day = None,
    days: Days = 1,
    start: Start = None,
    end: End = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Close runs whose period is not complete (INCOMPLETE) anyway."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Check that the runs of a pipeline tile a range; if so, close them.

    Closing deletes the runs' intermediate data: it asks first (--yes does not ask,
    --dry-run shows the plan and changes nothing). Exits with 1 when the check finds
    errors (listed in its error view), so scripts can tell.
    """
    start_ns, end_ns = _range(day, days, start, end)
    db = database()
    preview = service.check_closure(db, sw, start_ns, end_ns, force=force, dry_run=True)
    if dry_run:
        if as_json:
            emit_json({"plan": preview.plan, "summary": _plan_json(preview.plan)})
        else:
            _show_closure_plan(preview.plan)
        if not preview.plan.ok:
            raise typer.Exit(1)
        return
    if preview.plan.ok:
        plan = preview.plan
        confirm(
            f"closing {sw.upper()} {_days(start_ns, end_ns) or f'[{start_ns}, {end_ns})'} "
            f"closes runs {', '.join(map(str, plan.closing))} and deletes "
            f"{len(plan.deleting)} intermediate datasets ({_size(plan.bytes)})",
            yes,
        )
    report = service.check_closure(db, sw, start_ns, end_ns, force=force, expect=preview.plan)
    assert report.check is not None
    failed = report.check.check_status != "OK"
    if as_json:
        emit_json(report)
    else:
        _check_table("Run check closure", [report.check])
        if report.errors:
            _error_table(report.check.id, report.errors)
        elif report.deleted:
            console.print(
                f"{len(report.deleted)} intermediate datasets deleted "
                f"({report.files_removed} files removed)"
            )
        for failed_file in report.files_failed:
            console.print(
                f"dataset {failed_file.dataset.id}: cannot remove "
                f"{failed_file.dataset.location}: {failed_file.error}"
            )
    if failed:
        raise typer.Exit(1)


@closure_app.command("list")
def closure_list(
    sw: Annotated[str | None, typer.Option("--sw", help="Only this pipeline.")] = None,
    how_many: HowMany = 100,
    as_json: Json = False,
) -> None:
    """The run check closure table, newest first."""
    rows = service.closure_checks(database(), sw=sw, how_many=how_many)
    if as_json:
        emit_json(rows)
        return
    _check_table("Run check closure", rows)


@closure_app.command("errors")
def closure_errors(check_id: int, as_json: Json = False) -> None:
    """The error view of a check: each gap, overlap and unfinished run, with the runs."""
    rows = service.closure_errors(database(), check_id)
    if as_json:
        emit_json(rows)
        return
    _error_table(check_id, rows)


def _wait_quietly(db: Database, workflow_id: int, timeout: float = 3600.0) -> None:
    """Wait without a progress bar, which would break the JSON on stdout."""
    deadline = time.monotonic() + timeout
    while rms.workflow(db, workflow_id).workflow.status not in rms.ENDED:
        if time.monotonic() > deadline:
            raise DpctError(f"gave up waiting after {timeout:g} s; see `dpct workflow list`")
        time.sleep(0.3)


def _show_retraction_plan(plan: service.RetractionPlan) -> None:
    named = set(plan.named)
    table(
        "Would be retracted",
        ["ID", "HOW", "TYPE", "DATASPEC", "BYTES"],
        (
            (d.id, "named" if d.id in named else "derived", d.spec.data_type, d.spec.text, d.bytes)
            for d in plan.datasets
        ),
    )
    if plan.cleaning:
        table(
            "Files the cleaning workflow would delete",
            ["ID", "TYPE", "BYTES", "LOCATION"],
            ((d.id, d.spec.data_type, d.bytes, d.location) for d in plan.cleaning),
        )
    if plan.report_files:
        table(
            "Report files set aside in retracted/",
            ["JOB", "FILE"],
            plan.report_files,
        )
    if plan.refire:
        table(
            "Triggers that fire again on a corrected delivery",
            ["DESCRIPTOR", "KEY"],
            plan.refire,
        )
    console.print(
        f"would retract {len(plan.datasets)} datasets and delete {len(plan.cleaning)} files "
        f"({_size(plan.bytes)})"
    )


def retract(
    dataset_ids: Annotated[list[int], typer.Argument(help="Datasets to retract.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the event log.")] = "",
    clean: Annotated[
        bool, typer.Option("--clean/--no-clean", help="Submit the cleaning workflow.")
    ] = True,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the cleaning to end.")] = False,
    dry_run: DryRun = False,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Retract datasets and every dataset derived from them; their files are then deleted.

    Retracted datasets are no longer inputs from now on. The cleaning workflow
    (DataRetractionTraceExtractCleanAutWorkflow) deletes their files when a node runs it.
    It asks first (--yes does not ask; --dry-run lists what would change).
    """
    db = database()
    preview = service.retract(db, dataset_ids, reason=reason, clean=clean, dry_run=True)
    if dry_run:
        if as_json:
            emit_json({"plan": preview.plan, "bytes": preview.plan.bytes})
        else:
            _show_retraction_plan(preview.plan)
        return
    if not reason.strip():
        raise BadInput("give the reason for the retraction (--reason); the event log keeps it")
    if preview.plan.datasets:
        plan = preview.plan
        confirm(
            f"retracting {len(plan.datasets)} datasets "
            f"({len(plan.named)} named, {len(plan.datasets) - len(plan.named)} derived) "
            f"deletes {len(plan.cleaning)} files ({_size(plan.bytes)})",
            yes,
        )
    result = service.retract(db, dataset_ids, reason=reason, clean=clean, expect=preview.plan)
    wf = result.workflow_id
    if wait and wf is not None:
        if as_json:
            _wait_quietly(db, wf)
        else:
            watch(db, lambda: [rms.workflow(db, wf)])
    if as_json:
        emit_json({"retraction": result, "workflow": rms.workflow(db, wf) if wf else None})
        return
    console.print(
        f"{len(result.retracted)} datasets retracted: "
        f"{', '.join(map(str, result.retracted)) or 'none (already retracted or deleted)'}"
    )
    if result.reports_moved:
        console.print(f"{len(result.reports_moved)} report files set aside in retracted/")
    if result.plan.refire:
        names = sorted({name for name, _ in result.plan.refire})
        console.print(f"a corrected delivery starts {', '.join(names)} again")
    if wf is not None:
        console.print(f"cleaning workflow {wf} submitted (see `dpct workflow show {wf}`)")
