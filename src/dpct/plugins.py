"""Loading the modules that declare task and data types, shared by dpct.datamodel and dpct.tasks.

It sits below both: a registry asked for a name it does not know loads the plugins, and
neither registry may import the other to do so.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from dpct.errors import ConfigError

_loaded_entry_points = False


def load_entry_points() -> None:
    """Import the task modules: the ``dpct.tasks`` entry points, then ``DPCT_TASK_MODULES``.

    ``DPCT_TASK_MODULES`` (comma-separated module names) lets a pipeline developer try
    task types before packaging them; worker processes inherit it.
    """
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True  # a task module that looks up a type must not recurse
    for ep in entry_points(group="dpct.tasks"):
        ep.load()
    for module in filter(
        None, (m.strip() for m in os.environ.get("DPCT_TASK_MODULES", "").split(","))
    ):
        try:
            importlib.import_module(module)
        except ImportError as err:
            _loaded_entry_points = False  # every later lookup says it again
            raise ConfigError(
                f"DPCT_TASK_MODULES names {module!r}, which cannot be imported ({err}); "
                "install it or fix the variable (comma-separated module names)"
            ) from err
