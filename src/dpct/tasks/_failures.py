"""Task failures named by what the scheduler should do next (after lsst pipe_base).

Each error class says whether another attempt can help (``retryable``, inherited from
:class:`dpct.errors.DpctError`); the scheduler asks the class, never its name.
"""

from __future__ import annotations

from dpct.errors import DpctError


class TaskFailure(DpctError):
    """Base of the failures a task raises on purpose."""


class NoData(TaskFailure):
    """Nothing to process: the job is SKIPPED, which is not a failure."""

    retryable = False


class PermanentTaskError(TaskFailure):
    """Retrying will not help (bad input, impossible configuration): fail, flag an operator."""

    retryable = False


class TransientError(TaskFailure):
    """A passing condition (a busy resource, a network blip): retry with backoff."""

    retryable = True


def retry_policy(error: type[BaseException]) -> str:
    """What the scheduler does after a failure of class ``error``.

    Returns ``"skip"``, ``"fail"`` (no retry) or ``"retry"`` (while attempts remain).
    Exceptions that are not dpct's are bugs, and retried: a crash caused by the node
    (memory, a killed worker) deserves another attempt, and retries are bounded.
    """
    if issubclass(error, NoData):
        return "skip"
    if issubclass(error, DpctError) and not error.retryable:
        return "fail"
    return "retry"
