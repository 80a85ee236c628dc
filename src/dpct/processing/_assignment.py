"""What a node hands a worker process for one attempt, and how the attempt runs there."""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import os
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dpct import __version__
from dpct.config import Settings
from dpct.datamodel import DATA_TYPES, DataSpec
from dpct.errors import ContractError
from dpct.storage import (
    Completion,
    InputRef,
    LeasedJob,
    delete_product,
    read_product,
    select_datasets,
    store_at,
    system_services,
)
from dpct.tasks import TASK_TYPES, JobContext, NoData, retry_policy


class NodeGone(BaseException):
    """Raised in a worker whose node died: nobody will commit this attempt.

    A BaseException, so that a task's ``except Exception`` cannot swallow it: the
    attempt stops, its outputs are deleted and nothing is reported.
    """


@dataclass(frozen=True, slots=True)
class InputFile:
    dataset_id: int
    solution_id: int | None
    location: str


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: int
    workflow_id: int
    token: str
    attempt: int
    task_type: str
    spec: DataSpec
    params: str
    inputs: dict[str, list[InputFile]] = field(default_factory=dict)
    log_path: str = ""
    store_root: str = ""
    scratch_dir: str = ""
    log_max_bytes: int = 1_000_000
    log_backups: int = 3
    system_settings: Settings | None = None
    """The node's settings, for a system task only: its attempt opens the node's
    database with them (never the one of the worker's environment)."""


def resolve_inputs(conn, job: LeasedJob) -> dict[str, list[InputFile]]:
    """The available datasets each input of a leased job reads (inside the lease txn)."""
    task_type = TASK_TYPES.get(job.task_type)
    return {
        name: [
            InputFile(d.id, d.solution_id, d.location)
            for d in select_datasets(
                conn, job.spec.with_type(data_type), task_type.selections.get(name, "overlap")
            )
        ]
        for name, data_type in task_type.inputs.items()
    }


def make_assignment(
    job: LeasedJob, inputs: dict[str, list[InputFile]], settings: Settings
) -> Assignment:
    """The worker's instructions; the scratch folder is per job so retries find checkpoints."""
    system = TASK_TYPES.get(job.task_type).system
    return Assignment(
        job_id=job.id,
        workflow_id=job.workflow_id,
        token=job.token,
        attempt=job.attempt,
        task_type=job.task_type,
        spec=job.spec,
        params=job.params,
        inputs=inputs,
        log_path=str(settings.logs_dir / f"workflow-{job.workflow_id}" / f"job-{job.id}.log"),
        store_root=settings.store_root,
        scratch_dir=str(settings.home / "scratch" / f"job-{job.id}"),
        log_max_bytes=settings.log_max_bytes,
        log_backups=settings.log_backups,
        system_settings=settings if system else None,
    )


def run_assignment(a: Assignment) -> Completion:
    """Run one attempt: read inputs, call the task, write outputs under attempt names.

    Never raises: every failure becomes a Completion whose ``error_class`` tells the
    scheduler what to do next.
    """
    log = _attempt_logger(a)
    started = time.perf_counter()
    completion = Completion(job_id=a.job_id, token=a.token, outcome="failed", log_path=a.log_path)
    held = ExitStack()  # what the attempt opened for a system task (the database)
    try:
        task_type = TASK_TYPES.get(a.task_type)
        completion.task_type = task_type.name
        completion.software_version = f"{task_type.name}@{task_type.version} dpct@{__version__}"
        params = json.loads(a.params)
        config = task_type.parse_config(params)
        completion.config_json = config.model_dump_json()
        completion.config_hash = hashlib.sha256(
            f"{task_type.name}\n{completion.config_json}".encode()
        ).hexdigest()
        log.info("attempt %d of job %d: %s over %s", a.attempt, a.job_id, a.task_type, a.spec)
        tables: dict[str, pa.Table] = {}
        for name, data_type in task_type.inputs.items():
            files = a.inputs.get(name, [])
            parts = [read_product(f.location, data_type, ccd=a.spec.ccd) for f in files]
            tables[name] = pa.concat_tables(parts) if parts else DATA_TYPES.get(data_type).empty()
            completion.inputs.extend(
                InputRef(f.dataset_id, f.solution_id, data_type) for f in files
            )
            log.info("input %s: %d datasets, %d rows", name, len(files), tables[name].num_rows)
        scratch = Path(a.scratch_dir)
        if "scratch" in task_type.wants:
            scratch.mkdir(parents=True, exist_ok=True)
        alarms: list[tuple[str, str]] = []
        solutions = {
            name: [f.solution_id or 0 for f in a.inputs.get(name, [])] for name in task_type.inputs
        }
        job = JobContext(
            job_id=a.job_id,
            workflow_id=a.workflow_id,
            attempt=a.attempt,
            scratch=scratch,
            # absolute, as the log handler names it: retraction finds reports by this name
            log_path=Path(os.path.abspath(a.log_path)) if a.log_path else None,
        )
        system = None
        if task_type.system:
            if a.system_settings is None:
                raise ContractError(
                    f"system task {task_type.name!r} was assigned without the node's settings"
                )
            system = held.enter_context(system_services(a.system_settings))
        outputs = task_type.run(
            tables, params, a.spec, log, scratch, alarms, solutions, job=job, system=system
        )
        for name, table in outputs.items():
            spec = a.spec.with_type(task_type.outputs[name])
            output = store_at(a.store_root).write(table, spec, attempt_tag(a), name=name)
            completion.outputs.append(output)
            log.info("output %s: %d rows → %s", name, table.num_rows, output.location)
        completion.alarms = [(str(kind), str(message)) for kind, message in alarms]
        for kind, message in completion.alarms:
            log.warning("alarm %s: %s", kind, message)
        completion.outcome = "success"
    except NoData as err:
        completion.outcome = "skipped"
        completion.error_class = "NoData"
        completion.error_message = str(err) or "no data"
        log.info("no data: %s", completion.error_message)
    except Exception as err:  # every failure is reported, none escapes the worker
        completion.error_class = type(err).__name__
        completion.error_message = str(err) or type(err).__name__
        completion.retry = _retryable(err)
        log.error("failed: %s\n%s", completion.error_message, traceback.format_exc())
        _discard(completion)
    except NodeGone:
        completion.outcome = "abandoned"
        log.warning("the node is gone: attempt abandoned, its outputs deleted")
        raise  # the worker deletes every output of the attempt (see discard_attempt)
    finally:
        try:
            held.close()
        except Exception as err:  # the attempt's report matters more than the clean-up
            log.warning("closing the node's database after the attempt: %s", err)
        log.info("attempt ended: %s in %.3f s", completion.outcome, time.perf_counter() - started)
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
    return completion


def _retryable(err: Exception) -> bool:
    return retry_policy(type(err)) == "retry"


def _discard(completion: Completion) -> None:
    """Delete the output files of an attempt that will not be published."""
    for output in completion.outputs:
        delete_product(output.location)
    completion.outputs.clear()


def discard_outputs(completion: Completion) -> None:
    _discard(completion)


def attempt_tag(a: Assignment | Attempt) -> str:
    """The part of an attempt's product names that is unique to it (job, attempt, token)."""
    return f"j{a.job_id}a{a.attempt}-{a.token[:8]}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What names an attempt's files: enough to delete them without its assignment."""

    job_id: int
    attempt: int
    token: str
    task_type: str
    spec: DataSpec
    store_root: str


def discard_attempt(a: Assignment | Attempt) -> None:
    """Delete whatever an unreported attempt may have written, finished or not.

    For an attempt whose worker was killed or whose node died: its report never reached
    the database, so none of its files can be registered, and each is found by name
    (every product name carries the attempt's tag). Without this, each such attempt
    would leave an orphan for ``dpct store check``.
    """
    store = store_at(a.store_root)
    for data_type in set(TASK_TYPES.get(a.task_type).outputs.values()):
        store.discard(store.location_for(a.spec.with_type(data_type), attempt_tag(a)))


_JOB_LOG = logging.getLogger("dpct.job")
_JOB_LOG.setLevel(logging.INFO)
_JOB_LOG.propagate = False


def _attempt_logger(a: Assignment) -> logging.Logger:
    """The job logger, writing to this job's rotated file for the length of the attempt.

    One logger for all jobs, its handler swapped per attempt: a logger per job would
    grow the logging module's registry (and its cache clearing) without bound.
    """
    log = _JOB_LOG
    if a.log_path:
        Path(a.log_path).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            a.log_path, maxBytes=a.log_max_bytes, backupCount=a.log_backups
        )
    else:
        handler = logging.NullHandler()
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s [job {a.job_id} pid {os.getpid()}] %(message)s"
        )
    )
    log.addHandler(handler)
    return log
