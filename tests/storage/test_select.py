"""Input selections: every overlapping dataset, the one just before, the newest."""

from __future__ import annotations

import pytest

from dpct.datamodel import DataSpec
from dpct.storage import Database, OutputFile, register_dataset, select_datasets
from dpct.tasks import task
from dpct.tasks._registry import TASK_TYPES


def _add(db: Database, start: int, end: int, name: str) -> int:
    spec = DataSpec("testing_counts", start, end)
    file = OutputFile(name, "testing_counts", 1, spec, 1, 1, "sha256:0", f"/nowhere/{name}")
    with db.write() as conn:
        return register_dataset(conn, file, now=1.0, software_version="t")[0]


def test_before_and_newest_pick_one_dataset(db: Database) -> None:
    day0 = _add(db, 0, 10, "a")
    day1 = _add(db, 10, 20, "b")
    day2 = _add(db, 20, 30, "c")
    day0_again = _add(db, 0, 10, "a2")  # a later solution over day 0

    def ids(start: int, end: int, selection: str) -> list[int]:
        with db.read() as conn:
            found = select_datasets(conn, DataSpec("testing_counts", start, end), selection)
        return [d.id for d in found]

    assert ids(10, 20, "overlap") == [day1]
    assert ids(5, 15, "overlap") == [day0, day0_again, day1]
    assert ids(20, 30, "before") == [day1]  # ends last at or before the start
    assert ids(10, 20, "before") == [day0_again]  # the newest of equals
    assert ids(0, 10, "before") == []  # nothing earlier: the task sees an empty table
    assert ids(0, 10, "newest") == [day0_again]
    assert ids(40, 50, "newest") == [day0_again]  # wherever it lies
    assert ids(40, 50, "before") == [day2]


def test_a_selection_is_declared_with_the_input_type() -> None:
    @task("testing.select_demo", inputs={"counts": "testing_counts@before"})
    def demo(counts):  # type: ignore[no-untyped-def]
        return None

    declared = TASK_TYPES.get("testing.select_demo")
    assert declared.inputs == {"counts": "testing_counts"}
    assert declared.selections == {"counts": "before"}
    with pytest.raises(ValueError, match="unknown selection 'latest'"):
        task("testing.select_bad", inputs={"counts": "testing_counts@latest"})
