"""What a task may know about the job it runs in, handed over by the framework."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job and attempt a task function runs for (the ``job`` argument).

    Science code never derives these from paths or the logger: the framework builds
    this from the node's assignment, so a task sees the same ids however it is run.
    """

    job_id: int
    workflow_id: int
    attempt: int
    scratch: Path
    """The job's scratch folder (also injected as ``scratch``)."""
    log_path: Path | None = None
    """The job's log file; ``None`` where the job has none (a test, an inline run)."""

    def report_path(self, suffix: str) -> Path:
        """Where a file meant for people goes: ``<job log>.<suffix>`` beside the job's log,
        where operators look and where retraction finds it by name; without a log, the
        file ``job.<suffix>`` in the scratch folder.
        """
        if self.log_path is not None:
            return self.log_path.with_suffix(f".{suffix}")
        with contextlib.suppress(OSError):
            self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch / f"job.{suffix}"


def outside_a_job(scratch: Path) -> JobContext:
    """The context of a task run by hand (``TaskType.run`` in a notebook or a unit test):
    job and workflow -1 (no such row), first attempt, no log."""
    return JobContext(job_id=-1, workflow_id=-1, attempt=1, scratch=scratch)
