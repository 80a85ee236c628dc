"""Descriptor validation: every error names the file, the step and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpct.errors import DescriptorError
from dpct.workflows import load_descriptor

GOOD = """
name = "W"
version = 1
data_type = "testing_counts"
[trigger]
kind = "calendar"
cron = "0 3 * * *"
[[steps]]
name = "make"
task = "testing.make"
partition = "day"
params = { rows = 5 }
[[steps]]
name = "scale"
task = "testing.scale"
depends_on = ["make"]
"""


def _load(tmp_path: Path, text: str, suffix: str = ".toml"):
    path = tmp_path / f"w{suffix}"
    path.write_text(text)
    return load_descriptor(path), str(path)


def test_good_descriptor_loads_in_dependency_order(tmp_path: Path) -> None:
    d, _ = _load(tmp_path, GOOD)
    assert [s.name for s in d.step_order()] == ["make", "scale"]
    assert d.trigger.cron == "0 3 * * *"


def test_yaml_works_too(tmp_path: Path) -> None:
    text = (
        "name: W\nversion: 2\ndata_type: testing_counts\n"
        "steps:\n  - {name: a, task: testing.noop}\n"
    )
    d, _ = _load(tmp_path, text, ".yaml")
    assert d.version == 2


@pytest.mark.parametrize(
    ("change", "step", "field", "message"),
    [
        (
            ('task = "testing.scale"', 'task = "no.such"'),
            "scale",
            "task",
            "unknown task type 'no.such'",
        ),
        (('depends_on = ["make"]', 'depends_on = ["nope"]'), "scale", "depends_on", "unknown step"),
        (("params = { rows = 5 }", 'params = { rows = "many" }'), "make", "params", "rows"),
        (("params = { rows = 5 }", "params = { colour = 5 }"), "make", "params", "colour"),
        (('partition = "day"', 'partition = "weekly"'), "make", "partition", "duration"),
        (('cron = "0 3 * * *"', 'cron = "every day"'), "", "trigger.cron", "cron"),
        (("version = 1", 'version = "one"'), "", "version", "integer"),
    ],
)
def test_bad_descriptor_errors_name_file_step_field(
    tmp_path: Path, change: tuple[str, str], step: str, field: str, message: str
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(DescriptorError) as info:
        _load(tmp_path, text)
    err = info.value
    assert err.source.endswith("w.toml")
    assert err.step == step
    assert err.field == field
    assert message in str(err)
    assert f"file {err.source}" in str(err)


def test_dependency_cycle_is_named(tmp_path: Path) -> None:
    text = GOOD.replace('name = "make"\n', 'name = "make"\ndepends_on = ["scale"]\n')
    with pytest.raises(DescriptorError, match="cycle") as info:
        _load(tmp_path, text)
    assert info.value.field == "depends_on"


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match="syntax error"):
        _load(tmp_path, "name = \n")
    with pytest.raises(DescriptorError, match="cannot read"):
        load_descriptor(tmp_path / "absent.toml")
    with pytest.raises(DescriptorError, match="needs a cron"):
        _load(tmp_path, GOOD.replace('cron = "0 3 * * *"', ""))
