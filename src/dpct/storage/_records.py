"""Typed records returned by the storage layer, and the state vocabularies they use."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dpct.datamodel import DataSpec


class JobStatus(StrEnum):
    WAITING = "WAITING"  # upstream jobs have not all finished
    QUEUED = "QUEUED"  # ready to be leased (from not_before on)
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    SKIPPED = "SKIPPED"  # the task found no data: done, not failed
    FAILED = "FAILED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_JOB_STATES = frozenset({JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING})
DONE_JOB_STATES = frozenset({JobStatus.SUCCESS, JobStatus.SKIPPED})
BAD_JOB_STATES = frozenset({JobStatus.FAILED, JobStatus.UPSTREAM_FAILED})


class WorkflowStatus(StrEnum):
    NEW = "NEW"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    PARTIALLYSUCCESS = "PARTIALLYSUCCESS"
    CANCELLED = "CANCELLED"


class DatasetState(StrEnum):
    AVAILABLE = "AVAILABLE"
    RETRACTED = "RETRACTED"
    DELETED = "DELETED"
    SUPERSEDED = "SUPERSEDED"
    """A newer job output over the same interval replaced it (types with ``supersede``)."""
    MISSING = "MISSING"
    """``dpct store check --repair`` found no file for it: never an input again."""
    CORRUPT = "CORRUPT"
    """``dpct store check --repair`` found its file's size or SHA-256 changed; the file is
    kept for inspection, never an input again."""


FILED_DATASET_STATES = frozenset(
    {DatasetState.AVAILABLE, DatasetState.SUPERSEDED, DatasetState.RETRACTED}
)
"""Datasets whose file must exist and match its row (DELETED ones have none)."""
LOST_DATASET_STATES = frozenset({DatasetState.MISSING, DatasetState.CORRUPT})
"""Datasets whose bytes are gone or wrong: a re-delivery of the same bytes registers anew."""


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job to insert: its step, task type and DataSpec, with indices of upstream plans."""

    step: str
    task_type: str
    spec: DataSpec
    params: str
    cores: int
    max_attempts: int
    time_limit_s: float | None
    upstream: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LeasedJob:
    id: int
    workflow_id: int
    task_type: str
    step: str
    spec: DataSpec
    params: str
    cores: int
    attempt: int
    token: str
    time_limit_s: float | None
    started_at: float
    ready_at: float | None


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A product file written by an attempt, to be registered if the attempt commits."""

    name: str
    data_type: str
    type_version: int
    spec: DataSpec
    rows: int
    bytes: int
    checksum: str
    location: str


@dataclass(frozen=True, slots=True)
class InputRef:
    dataset_id: int
    solution_id: int | None
    data_type: str


@dataclass(slots=True)
class Completion:
    """What an attempt reports; committed only while ``token`` still holds the lease."""

    job_id: int
    token: str
    outcome: str  # "success" | "skipped" | "failed"
    error_class: str | None = None
    error_message: str | None = None
    retry: bool = True
    outputs: list[OutputFile] = field(default_factory=list)
    inputs: list[InputRef] = field(default_factory=list)
    log_path: str | None = None
    task_type: str = ""
    software_version: str = ""
    config_hash: str = ""
    config_json: str = "{}"
    alarms: list[tuple[str, str]] = field(default_factory=list)
    """(kind, message) the task raised: events, committed only with a successful attempt."""
    received: float = 0.0  # monotonic time the node got it (for batching), not stored


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    id: int
    name: str
    status: str
    persistence_id: int
    run_id: int | None
    transfer_id: int | None
    spec: DataSpec
    priority: int
    trigger: str
    n_jobs: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    descriptor_id: int


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    workflow_id: int
    seq: int
    step: str
    task_type: str
    status: str
    priority: int
    spec: DataSpec
    params: str
    cores: int
    attempts: int
    max_attempts: int
    node: str | None
    solution_id: int | None
    log_path: str | None
    error_class: str | None
    error_message: str | None
    created_at: float
    ready_at: float | None
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class DatasetRow:
    id: int
    spec: DataSpec
    type_version: int
    rows: int
    bytes: int
    checksum: str
    location: str
    solution_id: int | None
    state: str
    job_id: int | None
    transfer_id: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class SolutionRow:
    id: int
    output_type: str
    generation_time: float
    automatically_generated: bool
    software_version: str
    task_type: str | None
    configuration_id: int | None
    job_id: int | None
    input_solution_ids: tuple[int, ...] = ()
    input_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    role: str
    status: str
    host: str
    pid: int
    slots: int
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    time: float
    subsystem: str
    kind: str
    object_type: str
    object_id: str
    message: str


@dataclass(frozen=True, slots=True)
class DescriptorRow:
    id: int
    name: str
    version: int
    source: str
    content: str
    active: bool
    created_at: float


class TransferStatus(StrEnum):
    RUNNING = "RUNNING"
    DONE = "DONE"  # every file registered or already there
    PARTIAL = "PARTIAL"  # done, but at least one file was quarantined
    FAILED = "FAILED"  # the delivery could not be read or a file could not be fetched


class TransferFileStatus(StrEnum):
    REGISTERED = "REGISTERED"
    DUPLICATE = "DUPLICATE"  # the same bytes of the same type are already registered
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"  # not fetched (peer unreachable): a later pull resumes it
    SENT = "SENT"  # pushed out


@dataclass(frozen=True, slots=True)
class TransferRow:
    id: int
    direction: str
    peer: str
    status: str
    files: int
    bytes: int
    registered: int
    duplicates: int
    quarantined: int
    started_at: float
    ended_at: float | None
    message: str
    host: str = ""
    pid: int = 0
    pid_start: int | None = None
    heartbeat_at: float | None = None


@dataclass(frozen=True, slots=True)
class TransferClaimRow:
    """A running pull's hold on one file's bytes (checksum and type) until registered."""

    checksum: str
    data_type: str
    transfer_id: int
    name: str
    location: str
    claimed_at: float


@dataclass(frozen=True, slots=True)
class TransferFileRow:
    id: int
    transfer_id: int
    name: str
    data_type: str
    bytes: int
    checksum: str
    status: str
    reason: str
    dataset_id: int | None
    location: str


class RunStatus(StrEnum):
    DEFINED = "DEFINED"  # created, no workflow has started yet
    RUNNING = "RUNNING"
    PARTIALLYSUCCESS = "PARTIALLYSUCCESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


ENDED_RUN_STATES = frozenset({RunStatus.SUCCESS, RunStatus.PARTIALLYSUCCESS, RunStatus.FAILED})
RUN_SOFTWARE = ("AIM", "BAM", "GSR")
"""The pipelines whose runs are checked for closure (the seed's Sw column)."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """A pipeline run over an OBMT range (the seed's RUNID) and the workflows attached to it."""

    id: int
    sw: str
    obmt_start_ns: int
    obmt_end_ns: int
    status: str
    closed: bool
    ignored: bool
    note: str
    created_at: float
    ended_at: float | None
    workflow_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class AimRunRow:
    """The seed's AimRun: IDENTIFIER, STATUS, CLOSED and WORKFLOWIDS are the run's."""

    run: RunRow
    active_processing: bool
    solution_id: int | None
    solution_ids_processed: tuple[int, ...]
    solution_ids_to_be_processed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RunCheckRow:
    """One run check closure: the seed's Id, Sw, Start_check, End_check, statuses, Note."""

    id: int
    sw: str
    start_check_ns: int
    end_check_ns: int
    check_status: str
    delete_status: str
    note: str
    created_at: float


@dataclass(frozen=True, slots=True)
class RunCheckErrorRow:
    """One line of a check's error view: a gap, an overlap or an unfinished run."""

    id: int
    check_id: int
    kind: str
    obmt_start_ns: int
    obmt_end_ns: int
    run_ids: tuple[int, ...]
