"""RMS: workflow descriptors, planning of steps into jobs, triggers and operator actions."""

from dpct.workflows import service
from dpct.workflows._descriptor import (
    Descriptor,
    StepSpec,
    TriggerSpec,
    load_descriptor,
    parse_descriptor,
)
from dpct.workflows._obmt import obmt_ns_from_unix, unix_from_obmt_ns
from dpct.workflows._planning import partitions, plan_jobs
from dpct.workflows._triggers import fire_calendar_triggers, fire_data_triggers

__all__ = [
    "Descriptor",
    "StepSpec",
    "TriggerSpec",
    "fire_calendar_triggers",
    "fire_data_triggers",
    "load_descriptor",
    "obmt_ns_from_unix",
    "parse_descriptor",
    "partitions",
    "plan_jobs",
    "service",
    "unix_from_obmt_ns",
]
