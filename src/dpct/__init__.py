"""dpct: an open data processing center for a space mission's ground segment.

The package is laid out by subsystem, after the Italian Gaia DPC in Turin:
``storage`` (DSS: metadata database and product files), ``datamodel`` (data types and
DataSpecs), ``tasks`` (task-type contract), ``workflows`` (RMS), ``processing`` (PFS),
``events`` (EMS), ``cli`` (the ``dpct`` command), ``pipelines`` (AIM, BAM, GSR) and
``sim`` (the Gaia-like simulator).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dpct")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
