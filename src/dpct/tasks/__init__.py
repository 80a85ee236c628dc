"""The task-type contract between science code and the processing framework."""

from dpct.tasks._failures import (
    NoData,
    PermanentTaskError,
    TaskFailure,
    TransientError,
    retry_policy,
)
from dpct.tasks._job import JobContext
from dpct.tasks._registry import (
    TASK_TYPES,
    NoConfig,
    ParameterError,
    TaskType,
    load_entry_points,
    task,
)

__all__ = [
    "TASK_TYPES",
    "JobContext",
    "NoConfig",
    "NoData",
    "ParameterError",
    "PermanentTaskError",
    "TaskFailure",
    "TaskType",
    "TransientError",
    "load_entry_points",
    "retry_policy",
    "task",
]
