"""Report files of retracted work: the plots and pages a job wrote beside its log.

Report tasks write ``job-<id>.<name>.png`` / ``.html`` beside ``job-<id>.log`` (see
``dpct.tasks.JobContext.report_path``); nothing else records them. When the job's datasets are
retracted, its reports show withdrawn results, so they are moved into a ``retracted/``
folder beside them: still there to read, no longer where operators look for current
reports. The pages refer to their figures by file name, so a page and its figure moved
together still show.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

RETRACTED_FOLDER = "retracted"


def report_files(logs: Mapping[int, str]) -> list[tuple[int, str]]:
    """(job, file) for every file a job wrote beside its log, other than the log itself."""
    out: list[tuple[int, str]] = []
    for job_id, log in sorted(logs.items()):
        path = Path(log)
        with contextlib.suppress(OSError):
            for found in sorted(path.parent.glob(f"{path.stem}.*")):
                if not found.name.startswith(path.name) and found.is_file():
                    out.append((job_id, str(found)))
    return out


def set_aside(path: Path) -> Path:
    """Where a report file goes when its data are retracted."""
    return path.parent / RETRACTED_FOLDER / path.name


def set_reports_aside(paths: Iterable[str]) -> list[str]:
    """Move report files into ``retracted/`` beside them; returns where they now are.

    A file already gone (moved by an earlier retraction) is skipped: this runs after the
    retraction committed, and must not fail it.
    """
    moved: list[str] = []
    for name in paths:
        path = Path(name)
        target = set_aside(path)
        try:
            target.parent.mkdir(exist_ok=True)
            path.replace(target)
        except FileNotFoundError:
            continue
        moved.append(str(target))
    return moved
