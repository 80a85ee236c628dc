"""DSS data management: runs, run check closure, retraction and its cleaning workflow.

Importing this module declares the ``dss.retraction_clean`` task type and the
``dss_retraction_trace`` data type (the ``dpct.tasks`` entry point does it in workers).
``WORKFLOWS`` holds the shipped descriptor, which the retraction service registers
itself the first time it needs it.
"""

from dpct.datamanagement._tasks import (
    CLEAN_DESCRIPTOR,
    CLEAN_WORKFLOW,
    RETRACTION_TRACE,
    WORKFLOWS,
    retraction_clean,
)

__all__ = [
    "CLEAN_DESCRIPTOR",
    "CLEAN_WORKFLOW",
    "RETRACTION_TRACE",
    "WORKFLOWS",
    "retraction_clean",
]
