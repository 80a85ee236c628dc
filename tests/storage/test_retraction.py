"""Retraction through lineage, and the cleaning workflow run for real, on both backends.

The expected sets come from the test's own graph, walked here, not from the database.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.errors import BadInput, NotFound
from dpct.events import service as event_service
from dpct.pipelines.datamanagement import CLEAN_WORKFLOW, service
from dpct.pipelines.datamanagement._cleaning import remove_file
from dpct.processing import run_inline
from dpct.storage import (
    Database,
    DatasetRow,
    InputRef,
    find_datasets,
    read_product,
    register_dataset,
    store_at,
)
from dpct.storage import service as storage_service
from dpct.storage._schema import datasets as datasets_table
from dpct.testing import FakeClock
from dpct.workflows import service as rms

DAY = 8000
HOUR = 3_600 * 10**9

#   R → A → B → D → E      R → S (A's sibling)      U (unrelated)
#       A → C → D
GRAPH: dict[str, list[str]] = {
    "R": [],
    "A": ["R"],
    "S": ["R"],
    "B": ["A"],
    "C": ["A"],
    "D": ["B", "C"],
    "E": ["D"],
    "U": [],
}


def _derived(names: tuple[str, ...]) -> set[str]:
    """The named nodes and all their descendants, by walking GRAPH's edges forwards."""
    found = set(names)
    frontier = list(names)
    while frontier:
        node = frontier.pop()
        for child, parents in GRAPH.items():
            if node in parents and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _build(db: Database, settings: Settings) -> dict[str, int]:
    """One product file per node, registered with its parents as inputs."""
    store = store_at(settings.store_root)
    made: dict[str, tuple[int, int]] = {}
    with db.write() as conn:
        for k, (name, parents) in enumerate(GRAPH.items()):
            start = DAY * NS_PER_DAY + k * HOUR
            spec = DataSpec("testing_counts", start, start + HOUR)
            table = pa.table({"obmt_ns": [spec.start_ns], "value": np.array([float(k)])})
            file = store.write(table, spec, name)
            inputs = [InputRef(*made[p], "testing_counts") for p in parents]
            made[name] = register_dataset(conn, file, now=1.0, software_version="t", inputs=inputs)
    return {name: dataset_id for name, (dataset_id, _) in made.items()}


def _rows(db: Database) -> dict[int, sa.Row]:
    d = datasets_table.c
    with db.read() as conn:
        query = sa.select(d.id, d.data_type, d.location, d.state, d.retracted_at, d.deleted_at)
        return {r.id: r for r in conn.execute(query)}


WHOLE_DAY = DataSpec.day("testing_counts", DAY)


@pytest.mark.parametrize("targets", [("A",), ("B",), ("C", "E"), ("E",)])
def test_retraction_marks_exactly_the_descendants_and_cleaning_deletes_their_files(
    targets: tuple[str, ...],
    db: Database,
    settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _build(db, settings)
    expected = {ids[n] for n in _derived(targets)}
    kept = set(ids.values()) - expected
    asked = [ids[n] for n in targets]

    result = service.retract(db, asked, reason="wrong calibration table", now=clock())
    assert result.retracted == sorted(expected)
    rows = _rows(db)
    for dataset_id in ids.values():
        state = ("RETRACTED", clock()) if dataset_id in expected else ("AVAILABLE", None)
        assert (rows[dataset_id].state, rows[dataset_id].retracted_at) == state
    events = event_service.events(db, kind="dataset.retracted", limit=100)
    assert sorted(int(e.object_id) for e in events) == sorted(expected)
    for e in events:
        origin = "dataset " if len(asked) == 1 else "datasets "
        assert e.message == (
            "wrong calibration table"
            if int(e.object_id) in asked
            else f"derived from retracted {origin}{', '.join(map(str, sorted(asked)))}: "
            "wrong calibration table"
        )
    # No longer inputs, from the moment the retraction commits.
    with db.read() as conn:
        assert {d.id for d in find_datasets(conn, WHOLE_DAY)} == kept

    # The cleaning workflow was submitted in the same transaction; run it for real.
    assert result.workflow_id is not None
    view = rms.workflow(db, result.workflow_id)
    assert view.workflow.name == CLEAN_WORKFLOW and view.workflow.trigger == "retraction"
    monkeypatch.setenv("DPCT_HOME", str(settings.home))
    monkeypatch.setenv("DPCT_DATABASE_URL", settings.database_url)
    run_inline(db, settings, clock)
    assert rms.workflow(db, result.workflow_id).workflow.status == "SUCCESS"

    after = _rows(db)
    for dataset_id in ids.values():
        row = after[dataset_id]
        if dataset_id in expected:
            assert row.state == "DELETED" and row.deleted_at is not None
            assert not Path(row.location).exists()
        else:
            assert row.state == "AVAILABLE" and row.deleted_at is None
            assert Path(row.location).exists()
    with db.read() as conn:
        assert {d.id for d in find_datasets(conn, WHOLE_DAY)} == kept
    (trace,) = storage_service.datasets(db, data_type="dss_retraction_trace")
    table = read_product(trace.location, "dss_retraction_trace")
    assert sorted(table.column("dataset_id").to_pylist()) == sorted(expected)
    assert all(table.column("file_removed").to_pylist())
    deleted = event_service.events(db, kind="dataset.deleted", limit=100)
    assert sorted(int(e.object_id) for e in deleted) == sorted(expected)

    # Again: nothing left to retract or to clean.
    again = service.retract(db, asked, reason="twice", now=clock())
    assert again.retracted == [] and again.workflow_id is None


def test_retracting_a_deleted_dataset_still_withdraws_what_was_made_from_it(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    with db.write() as conn:
        conn.execute(
            sa.update(datasets_table)
            .where(datasets_table.c.id == ids["B"])
            .values(state="DELETED", deleted_at=clock())
        )
    result = service.retract(db, [ids["B"]], reason="bad", clean=False, now=clock())
    assert result.retracted == sorted(ids[n] for n in ("D", "E"))
    assert result.workflow_id is None
    assert _rows(db)[ids["B"]].state == "DELETED"


def test_bad_retractions_are_refused_and_change_nothing(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    with pytest.raises(NotFound, match=r"^datasets 998, 999 not found; list them with"):
        service.retract(db, [ids["A"], 999, 998], reason="x")
    with pytest.raises(NotFound, match=r"^dataset 999 not found"):
        service.retract(db, [999], reason="x")
    with pytest.raises(BadInput, match="give the reason"):
        service.retract(db, [ids["A"]], reason="  ")
    with pytest.raises(BadInput, match="at least one dataset"):
        service.retract(db, [], reason="x")
    assert {r.state for r in _rows(db).values()} == {"AVAILABLE"}
    assert rms.workflows(db) == []


def test_a_file_that_cannot_be_removed_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file"
    folder.mkdir()
    row = DatasetRow(1, WHOLE_DAY, 1, 1, 1, "sha256:0", str(folder), None, "DELETED", None, None, 0)
    result = remove_file(row)
    assert not result.file_removed and result.error and folder.exists()
    gone = remove_file(dataclasses.replace(row, location=str(tmp_path / "gone.parquet")))
    assert not gone.file_removed and not gone.error
