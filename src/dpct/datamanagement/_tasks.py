"""The retraction cleaning task type, its trace data type and its workflow descriptor."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow as pa

from dpct.datamanagement._cleaning import clean_retracted
from dpct.datamodel import DataSpec, data_type
from dpct.storage import SystemServices
from dpct.tasks import NoData, task

WORKFLOWS = Path(__file__).with_name("workflows")
CLEAN_WORKFLOW = "DataRetractionTraceExtractCleanAutWorkflow"
CLEAN_DESCRIPTOR = WORKFLOWS / "data_retraction_clean.toml"

RETRACTION_TRACE = data_type(
    "dss_retraction_trace",
    1,
    [
        ("dataset_id", "int64", "", "id of the deleted dataset"),
        ("data_type", "string", "", "its data type"),
        ("obmt_start_ns", "int64", "ns", "start of its OBMT interval"),
        ("obmt_end_ns", "int64", "ns", "end of its OBMT interval (exclusive)"),
        ("solution_id", "int64", "", "its solution id"),
        ("location", "string", "", "where its file was"),
        ("file_removed", "bool", "", "false when it was already gone or could not be"),
    ],
    description="What a retraction cleaning deleted: one row per dataset",
)


@task("dss.retraction_clean", outputs={"trace": "dss_retraction_trace"}, system=True)
def retraction_clean(spec: DataSpec, log: logging.Logger, system: SystemServices) -> pa.Table:
    """Deletes the files of the RETRACTED datasets overlapping the job's OBMT interval.

    Unlike a science task, this DSS housekeeping task is a system task and uses the
    metadata database of its node: which datasets to delete is only known there, and the
    deletion must be recorded there before the files go. Those rows are not outputs of
    the attempt: a retry finds them DELETED and deletes nothing twice.
    """
    cleaned = clean_retracted(system.database, spec.start_ns, spec.end_ns, time.time())
    if not cleaned:
        raise NoData(f"no retracted datasets in [{spec.start_ns}, {spec.end_ns})")
    for c in cleaned:
        if c.error:
            log.warning(
                "dataset %d: cannot remove %s: %s", c.dataset.id, c.dataset.location, c.error
            )
            continue
        log.info(
            "deleted dataset %d (%s): %s%s",
            c.dataset.id,
            c.dataset.spec.text,
            c.dataset.location,
            "" if c.file_removed else " (file was already gone)",
        )
    return pa.table(
        {
            "dataset_id": [c.dataset.id for c in cleaned],
            "data_type": [c.dataset.spec.data_type for c in cleaned],
            "obmt_start_ns": [c.dataset.spec.start_ns for c in cleaned],
            "obmt_end_ns": [c.dataset.spec.end_ns for c in cleaned],
            "solution_id": pa.array([c.dataset.solution_id for c in cleaned], pa.int64()),
            "location": [c.dataset.location for c in cleaned],
            "file_removed": [c.file_removed for c in cleaned],
        }
    )
