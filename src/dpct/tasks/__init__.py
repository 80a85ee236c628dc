"""The task-type contract between science code and the processing framework."""

from dpct.tasks._failures import NoData, PermanentTaskError, TaskFailure, TransientError
from dpct.tasks._files import beside_job_log
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
    "NoConfig",
    "NoData",
    "ParameterError",
    "PermanentTaskError",
    "TaskFailure",
    "TaskType",
    "TransientError",
    "beside_job_log",
    "load_entry_points",
    "task",
]
