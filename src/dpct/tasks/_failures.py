"""Task failures named by what the scheduler should do next (after lsst pipe_base)."""

from __future__ import annotations


class TaskFailure(Exception):
    """Base of the failures a task raises on purpose."""


class NoData(TaskFailure):
    """Nothing to process: the job is SKIPPED, which is not a failure."""


class PermanentTaskError(TaskFailure):
    """Retrying will not help (bad input, impossible configuration): fail, flag an operator."""


class TransientError(TaskFailure):
    """A passing condition (a busy resource, a network blip): retry with backoff."""


_NO_RETRY = frozenset(
    {
        "PermanentTaskError",
        "SchemaMismatch",
        "ContractError",
        "UnknownTaskType",
        "UnknownDataType",
        "ParameterError",
    }
)


def retry_policy(error_class: str) -> str:
    """What the scheduler does after a failure of ``error_class``.

    Returns ``"skip"``, ``"fail"`` (no retry) or ``"retry"`` (while attempts remain).
    Unknown exceptions are bugs, and retried: a crash caused by the node (memory,
    a killed worker) deserves another attempt, and retries are bounded.
    """
    if error_class == "NoData":
        return "skip"
    if error_class in _NO_RETRY:
        return "fail"
    return "retry"
