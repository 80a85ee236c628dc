"""One exception hierarchy for dpct, so the CLI and the web map errors in one place each.

Each class's docstring is its default message; a message names the object, its id and
what to do next.
"""

from __future__ import annotations


class DpctError(Exception):
    """dpct failed."""

    exit_code = 1
    retryable = True
    """Whether another attempt of a job that failed with this error may succeed; where
    it cannot (a wrong table, an unknown task type), the job fails at once."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(DpctError):
    """The configuration is invalid; check DPCT_* environment variables."""

    exit_code = 2


class BadInput(DpctError, ValueError):
    """The input is invalid."""

    exit_code = 2


class NotFound(DpctError):
    """The object was not found."""

    exit_code = 3


class Conflict(DpctError):
    """The operation conflicts with the stored state."""

    exit_code = 4


class InvalidState(DpctError):
    """The object is not in a state that allows this operation."""

    exit_code = 4


class WorkFailed(DpctError):
    """The work ran and ended without succeeding (e.g. a workflow FAILED); see its jobs."""

    exit_code = 6


class StorageError(DpctError):
    """The metadata database could not be used."""

    exit_code = 5


class SchemaOutdated(StorageError):
    """The database schema is older than this dpct; run `dpct db upgrade`."""


class DatabaseUnreachable(StorageError):
    """The metadata database cannot be reached; check DPCT_DATABASE_URL and the server."""


class DescriptorError(DpctError):
    """A workflow descriptor is invalid."""

    exit_code = 2

    def __init__(self, message: str, *, source: str = "", step: str = "", field: str = "") -> None:
        where = ", ".join(
            part
            for part in (
                source and f"file {source}",
                step and f"step {step!r}",
                field and f"field {field!r}",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.step = step
        self.field = field


class UnknownTaskType(DpctError):
    """No task type is registered under this name; check the `dpct.tasks` entry points."""

    exit_code = 2
    retryable = False


class UnknownDataType(DpctError):
    """No data type is registered under this name."""

    exit_code = 2
    retryable = False


class SchemaMismatch(DpctError):
    """A table does not match its registered data type."""

    exit_code = 2
    retryable = False


class ContractError(DpctError):
    """A task broke the task-type contract (undeclared output, wrong schema); not retried."""

    exit_code = 2
    retryable = False


class TransferError(DpctError):
    """A transfer failed."""


class PartialTransfer(TransferError, WorkFailed):
    """A transfer ended PARTIAL: some files were quarantined; see `dpct transfer show ID`."""

    exit_code = 6
