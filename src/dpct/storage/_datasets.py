"""Datasets, solution ids, configuration instances and lineage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.datamodel import DATA_TYPES, DataSpec
from dpct.errors import UnknownDataType
from dpct.storage._database import serialize_on
from dpct.storage._events import add_events
from dpct.storage._records import DatasetRow, DatasetState, InputRef, OutputFile, SolutionRow
from dpct.storage._schema import configurations, datasets, solution_inputs, solutions

_CONFIG_BY_HASH = sa.select(configurations.c.id).where(configurations.c.hash == sa.bindparam("h"))
_INSERT_SOLUTIONS = sa.insert(solutions).returning(solutions.c.id, sort_by_parameter_order=True)
_INSERT_LINKS = sa.insert(solution_inputs)


def configuration_id(conn: Connection, config_hash: str, content: str, now: float) -> int:
    """The id of a configuration instance, stored once by its hash."""
    found = conn.execute(_CONFIG_BY_HASH, {"h": config_hash}).scalar()
    if found is not None:
        return int(found)
    return int(
        conn.execute(
            sa.insert(configurations)
            .values(hash=config_hash, content=content, created_at=now)
            .returning(configurations.c.id)
        ).scalar_one()
    )


def add_solutions(conn: Connection, rows: Sequence[dict[str, object]]) -> list[int]:
    """Allocate solution ids; each row holds the ``solutions`` columns except ``id``."""
    if not rows:
        return []
    if len(rows) == 1:
        return [int(conn.execute(_INSERT_SOLUTIONS, rows[0]).scalar_one())]
    return [int(r[0]) for r in conn.execute(_INSERT_SOLUTIONS, rows)]


def add_solution_inputs(conn: Connection, links: Iterable[tuple[int, int, str]]) -> None:
    """Record lineage: (solution id, input solution id, input data type)."""
    # one row per (solution, input solution): a job may read several types it wrote
    unique = {(s, i): t for s, i, t in sorted(set(links), reverse=True)}
    rows = [
        {"solution_id": s, "input_solution_id": i, "input_type": t} for (s, i), t in unique.items()
    ]
    if rows:
        conn.execute(_INSERT_LINKS, rows)


def add_datasets(
    conn: Connection,
    files: Sequence[OutputFile],
    *,
    now: float,
    solution_id: int | None,
    job_id: int | None = None,
    transfer_id: int | None = None,
) -> list[int]:
    if not files:
        return []
    rows = [
        {
            "data_type": f.data_type,
            "type_version": f.type_version,
            "obmt_start_ns": f.spec.start_ns,
            "obmt_end_ns": f.spec.end_ns,
            "ccd": f.spec.ccd,
            "fov": f.spec.fov,
            "rows": f.rows,
            "bytes": f.bytes,
            "checksum": f.checksum,
            "location": f.location,
            "solution_id": solution_id,
            "state": DatasetState.AVAILABLE,
            "job_id": job_id,
            "transfer_id": transfer_id,
            "created_at": now,
        }
        for f in files
    ]
    ids = [
        int(r[0])
        for r in conn.execute(
            sa.insert(datasets).returning(datasets.c.id, sort_by_parameter_order=True), rows
        )
    ]
    add_events(
        conn,
        now,
        [
            ("DSS", "dataset.registered", "dataset", i, f"{f.spec.text} {f.rows} rows")
            for i, f in zip(ids, files, strict=True)
        ],
    )
    if job_id is not None:
        _supersede(conn, [(i, f) for i, f in zip(ids, files, strict=True)], now)
    return ids


def _supersedes(data_type: str) -> bool:
    try:
        return DATA_TYPES.get(data_type).supersede
    except UnknownDataType:
        return False


def _supersede(conn: Connection, new: Sequence[tuple[int, OutputFile]], now: float) -> None:
    """Older AVAILABLE datasets over exactly a new one's interval become SUPERSEDED."""
    d = datasets.c
    events = []
    for dataset_id, f in new:
        if not _supersedes(f.data_type):
            continue
        # two jobs registering the same interval at once must see each other's rows
        serialize_on(conn, f"supersede:{f.data_type}:{f.spec.start_ns}:{f.spec.end_ns}")
        same = sa.and_(
            d.data_type == f.data_type,
            d.obmt_start_ns == f.spec.start_ns,
            d.obmt_end_ns == f.spec.end_ns,
            d.ccd.is_(None) if f.spec.ccd is None else d.ccd == f.spec.ccd,
            d.fov.is_(None) if f.spec.fov is None else d.fov == f.spec.fov,
            d.state == DatasetState.AVAILABLE,
            d.id < dataset_id,
        )
        old = conn.execute(sa.select(d.id).where(same)).scalars().all()  # after the lock
        if old:
            conn.execute(
                sa.update(datasets).where(d.id.in_(old)).values(state=DatasetState.SUPERSEDED)
            )
            events += [
                ("DSS", "dataset.superseded", "dataset", int(i), f"by dataset {dataset_id}")
                for i in old
            ]
    add_events(conn, now, events)


def register_dataset(
    conn: Connection,
    file: OutputFile,
    *,
    now: float,
    software_version: str,
    inputs: Sequence[InputRef] = (),
    transfer_id: int | None = None,
    automatically_generated: bool = False,
) -> tuple[int, int]:
    """Register one product from outside a job (ingest, transfer); returns (dataset, solution)."""
    (solution_id,) = add_solutions(
        conn,
        [
            {
                "output_type": file.data_type,
                "generation_time": now,
                "automatically_generated": automatically_generated,
                "software_version": software_version,
                "task_type": None,
                "configuration_id": None,
                "job_id": None,
            }
        ],
    )
    add_solution_inputs(
        conn, ((solution_id, i.solution_id, i.data_type) for i in inputs if i.solution_id)
    )
    (dataset_id,) = add_datasets(
        conn, [file], now=now, solution_id=solution_id, transfer_id=transfer_id
    )
    return dataset_id, solution_id


def _dataset_row(row: sa.Row) -> DatasetRow:
    m = row._mapping
    return DatasetRow(
        id=m["id"],
        spec=DataSpec(m["data_type"], m["obmt_start_ns"], m["obmt_end_ns"], m["ccd"], m["fov"]),
        type_version=m["type_version"],
        rows=m["rows"],
        bytes=m["bytes"],
        checksum=m["checksum"],
        location=m["location"],
        solution_id=m["solution_id"],
        state=m["state"],
        job_id=m["job_id"],
        transfer_id=m["transfer_id"],
        created_at=m["created_at"],
    )


def _overlapping(spec: DataSpec) -> sa.Select:
    d = datasets.c
    query = sa.select(datasets).where(
        d.data_type == spec.data_type,
        d.state == DatasetState.AVAILABLE,
        d.obmt_start_ns < spec.end_ns,
        d.obmt_end_ns > spec.start_ns,
    )
    if spec.ccd is not None:
        query = query.where(sa.or_(d.ccd.is_(None), d.ccd == spec.ccd))
    if spec.fov is not None:
        query = query.where(sa.or_(d.fov.is_(None), d.fov == spec.fov))
    return query


def find_datasets(conn: Connection, spec: DataSpec) -> list[DatasetRow]:
    """Available datasets of ``spec``'s type overlapping it, in OBMT then id order."""
    query = _overlapping(spec).order_by(datasets.c.obmt_start_ns, datasets.c.id)
    return [_dataset_row(r) for r in conn.execute(query)]


def select_datasets(conn: Connection, spec: DataSpec, selection: str) -> list[DatasetRow]:
    """The datasets a job's input reads, by the input's selection (see dpct.tasks)."""
    if selection == "overlap":
        return find_datasets(conn, spec)
    d = datasets.c
    query = sa.select(datasets).where(
        d.data_type == spec.data_type, d.state == DatasetState.AVAILABLE
    )
    if spec.ccd is not None:
        query = query.where(sa.or_(d.ccd.is_(None), d.ccd == spec.ccd))
    if spec.fov is not None:
        query = query.where(sa.or_(d.fov.is_(None), d.fov == spec.fov))
    if selection == "before":
        query = query.where(d.obmt_end_ns <= spec.start_ns).order_by(
            d.obmt_end_ns.desc(), d.id.desc()
        )
    elif selection == "newest":
        query = query.order_by(d.id.desc())
    else:
        raise ValueError(f"unknown input selection {selection!r}")
    row = conn.execute(query.limit(1)).first()
    return [_dataset_row(row)] if row is not None else []


def datasets_after(conn: Connection, after_id: int, limit: int = 1000) -> list[DatasetRow]:
    query = (
        sa.select(datasets)
        .where(datasets.c.id > after_id, datasets.c.state == DatasetState.AVAILABLE)
        .order_by(datasets.c.id)
        .limit(limit)
    )
    return [_dataset_row(r) for r in conn.execute(query)]


def coverage_gaps(conn: Connection, spec: DataSpec) -> list[tuple[int, int]]:
    """The parts of ``spec``'s interval that no available dataset of its type covers."""
    cursor = spec.start_ns
    gaps = []
    for ds in find_datasets(conn, spec):
        if ds.spec.start_ns > cursor:
            gaps.append((cursor, min(ds.spec.start_ns, spec.end_ns)))
        cursor = max(cursor, ds.spec.end_ns)
        if cursor >= spec.end_ns:
            break
    if cursor < spec.end_ns:
        gaps.append((cursor, spec.end_ns))
    return gaps


def get_dataset(conn: Connection, dataset_id: int) -> DatasetRow | None:
    row = conn.execute(sa.select(datasets).where(datasets.c.id == dataset_id)).first()
    return _dataset_row(row) if row else None


def list_datasets(
    conn: Connection, *, data_type: str | None = None, limit: int = 100
) -> list[DatasetRow]:
    query = sa.select(datasets).order_by(datasets.c.id.desc()).limit(limit)
    if data_type:
        query = query.where(datasets.c.data_type == data_type)
    return [_dataset_row(r) for r in conn.execute(query)]


def get_solution(conn: Connection, solution_id: int) -> SolutionRow | None:
    row = conn.execute(sa.select(solutions).where(solutions.c.id == solution_id)).first()
    if row is None:
        return None
    links = conn.execute(
        sa.select(solution_inputs.c.input_solution_id, solution_inputs.c.input_type)
        .where(solution_inputs.c.solution_id == solution_id)
        .order_by(solution_inputs.c.input_solution_id)
    ).all()
    return SolutionRow(
        **row._mapping,
        input_solution_ids=tuple(int(r[0]) for r in links),
        input_types=tuple(r[1] for r in links),
    )


def lineage(conn: Connection, solution_id: int, direction: str) -> list[int]:
    """Solution ids reachable from ``solution_id``, sorted.

    ``direction`` is ``"ancestors"`` (what it was made from) or ``"descendants"`` (what
    was made from it). One recursive CTE with UNION, which removes repeats so diamonds
    are walked once; SQLite and PostgreSQL both run it.
    """
    link = solution_inputs.c
    if direction == "ancestors":
        near, far = link.solution_id, link.input_solution_id
    elif direction == "descendants":
        near, far = link.input_solution_id, link.solution_id
    else:
        raise ValueError(f"direction must be 'ancestors' or 'descendants', not {direction!r}")
    walk = sa.select(far.label("sid")).where(near == solution_id).cte("walk", recursive=True)
    walk = walk.union(sa.select(far).where(near == walk.c.sid))
    return [int(sid) for (sid,) in conn.execute(sa.select(walk.c.sid).order_by(walk.c.sid))]
