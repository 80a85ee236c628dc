"""Where a task puts files meant for people (plots, pages): beside the job's log."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


def beside_job_log(log: logging.Logger, scratch: Path, suffix: str) -> Path:
    """``<job log>.<suffix>`` when the job has a log file (operators look there), else a
    file in the job's scratch folder (tests and inline runs without a log).

    The job's file handler is the last one added; another file handler already on the
    logger (pytest's, say) must not take the reports elsewhere: retraction finds them
    beside the job log, by name.
    """
    for handler in reversed(log.handlers):
        base = getattr(handler, "baseFilename", None)
        if base:
            return Path(base).with_suffix(f".{suffix}")
    with contextlib.suppress(OSError):
        scratch.mkdir(parents=True, exist_ok=True)
    return scratch / f"job.{suffix}"
