"""Checkpoint files of the LSQR state, written atomically and matched to their problem.

A checkpoint belongs to a job, not to an attempt: the caller names the file after the
job (:func:`checkpoint_path`), so a retried job finds the file of the attempt that died
and resumes from it. The file records a fingerprint of the system and of the settings
that shape the iterates; a file written for anything else is refused rather than
silently resumed.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._exceptions import CheckpointMismatchError

FORMAT_VERSION = 1


def checkpoint_path(directory: str | os.PathLike[str], job_id: str, stage: str = "lsqr") -> Path:
    """Checkpoint file of a job's solver stage: the same for every attempt of the job.

    Parameters
    ----------
    directory
        Where the processing node keeps job state that must survive the node.
    job_id
        The job's id (not the attempt's), so a retry resumes.
    stage
        Which solve of the job, e.g. ``"outer02"`` for the third re-linearisation.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{job_id}.{stage}")
    return Path(directory) / f"{safe}.ckpt.npz"


def write_checkpoint(
    path: Path, fingerprint: str, arrays: dict[str, NDArray], scalars: dict[str, float]
) -> None:
    """Write the state to ``path`` atomically: a temporary file, flushed, then renamed.

    A reader sees either the previous complete checkpoint or the new one, never a torn
    file, even if the node is killed while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload: dict[str, NDArray] = {f"a_{k}": np.asarray(v) for k, v in arrays.items()}
    payload["scalar_names"] = np.array(list(scalars), dtype=str)
    payload["scalar_values"] = np.array(list(scalars.values()), dtype=np.float64)
    payload["fingerprint"] = np.array(fingerprint)
    payload["version"] = np.array(FORMAT_VERSION)
    with open(tmp, "wb") as f:
        np.savez(f, **payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(
    path: Path, fingerprint: str
) -> tuple[dict[str, NDArray], dict[str, float]] | None:
    """Read a checkpoint; None if there is none. Refuse one made for another problem.

    Raises
    ------
    CheckpointMismatchError
        The file exists but was written for another system, other solver settings, or by
        an incompatible version, or it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            found = str(z["fingerprint"])
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
            scalars = dict(
                zip(
                    (str(s) for s in z["scalar_names"]),
                    (float(v) for v in z["scalar_values"]),
                    strict=True,
                )
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointMismatchError(
            f"checkpoint {path} cannot be read ({err}); delete it to start the solve afresh"
        ) from err
    if version != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"checkpoint {path} has format {version}, this dpct writes {FORMAT_VERSION}; "
            "delete it to start the solve afresh"
        )
    if found != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for another system or other solver settings "
            f"(fingerprint {found[:12]}…, this solve {fingerprint[:12]}…); a job's "
            "checkpoint must not be reused by another job: use a path keyed by this job's "
            "id, or delete the file to start afresh"
        )
    return arrays, scalars
