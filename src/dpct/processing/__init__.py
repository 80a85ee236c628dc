"""PFS: the processing core: coordinator, processing nodes and their worker processes."""

from dpct.processing._assignment import Assignment, InputFile, run_assignment
from dpct.processing._coordinator import (
    COORDINATOR,
    MANAGER,
    Coordinator,
    reap_expired_leases,
    tick,
)
from dpct.processing._inline import run_inline
from dpct.processing._local import LocalCluster
from dpct.processing._node import Node

__all__ = [
    "COORDINATOR",
    "MANAGER",
    "Assignment",
    "Coordinator",
    "InputFile",
    "LocalCluster",
    "Node",
    "reap_expired_leases",
    "run_assignment",
    "run_inline",
    "tick",
]
