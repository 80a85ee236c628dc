"""Lineage walks solution ids both ways, through diamonds, on both backends."""

from __future__ import annotations

from dpct.datamodel import DataSpec
from dpct.storage import (
    Database,
    InputRef,
    OutputFile,
    get_solution,
    lineage,
    register_dataset,
)


def _file(name: str) -> OutputFile:
    spec = DataSpec("testing_counts", 0, 10)
    return OutputFile(name, "testing_counts", 1, spec, 1, 1, "sha256:0", f"/nowhere/{name}")


def test_ancestors_and_descendants_through_a_diamond(db: Database) -> None:
    #   a → b → d → e        f (unrelated)
    #   a → c → d
    made: dict[str, tuple[int, int]] = {}
    with db.write() as conn:

        def make(name: str, *parents: str) -> None:
            inputs = [InputRef(made[p][0], made[p][1], "testing_counts") for p in parents]
            made[name] = register_dataset(
                conn, _file(name), now=1.0, software_version="t", inputs=inputs
            )

        make("a")
        make("b", "a")
        make("c", "a")
        make("d", "b", "c")
        make("e", "d")
        make("f")
    sid = {k: v[1] for k, v in made.items()}
    with db.read() as conn:
        assert lineage(conn, sid["d"], "ancestors") == sorted([sid["a"], sid["b"], sid["c"]])
        assert lineage(conn, sid["a"], "descendants") == sorted(
            [sid["b"], sid["c"], sid["d"], sid["e"]]
        )
        assert lineage(conn, sid["e"], "descendants") == []
        assert lineage(conn, sid["f"], "ancestors") == []
        d = get_solution(conn, sid["d"])
    assert d is not None
    assert d.input_solution_ids == tuple(sorted([sid["b"], sid["c"]]))
    assert d.output_type == "testing_counts" and not d.automatically_generated
