"""The layer checks CI runs (import-linter's contracts and ruff's banned SQLAlchemy).

A check that never fails proves nothing: each violation is planted in a copy of the
package and the checks must refuse it by name; the real tree must pass both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The console script may belong to another interpreter; run the checks with this one.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command())"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts in ``root``'s pyproject.toml on the ``dpct`` under ``root/src``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            LINT_IMPORTS,
            "--config",
            str(root / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ruff_check(root: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its pyproject.toml, to plant violations in."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "src" / "dpct",
        tmp_path / "src" / "dpct",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def plant(tree: Path, module: str, source: str) -> None:
    (tree / "src" / Path(*module.split("."))).with_suffix(".py").write_text(source)


def test_the_real_tree_passes_the_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_real_tree_passes_ruff() -> None:
    result = ruff_check(ROOT, "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_copy_passes_before_anything_is_planted(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("plants", "contract", "offence"),
    [
        (
            {"dpct.pipelines.demo._bad": "import dpct.storage\n"},
            "science code receives everything from the framework BROKEN",
            "dpct.pipelines.demo._bad -> dpct.storage",
        ),
        (
            {"dpct.pipelines.demo._bad": "from dpct.config import Settings\n"},
            "science code receives everything from the framework BROKEN",
            "dpct.pipelines.demo._bad -> dpct.config",
        ),
        (
            {"dpct.storage._bad": "from dpct.workflows import service\n"},
            "dpct layers BROKEN",
            "dpct.storage._bad -> dpct.workflows",
        ),
        (
            {"dpct.sim._bad": "import dpct.pipelines.gsr\n"},
            "the simulator and the science pipelines know nothing of each other BROKEN",
            "dpct.sim._bad -> dpct.pipelines.gsr",
        ),
        (
            {"dpct.pipelines.aim._bad": "import dpct.pipelines.bam\n"},
            "each science pipeline stands alone BROKEN",
            "dpct.pipelines.aim._bad -> dpct.pipelines.bam",
        ),
        (
            {"dpct.cli._bad": "from dpct.storage._closure import Problem\n"},
            "a package's private modules (_name) are its own BROKEN",
            "dpct.cli._bad -> dpct.storage._closure",
        ),
        (
            {"dpct.workflows._bad": "from sqlalchemy.engine import Connection\n"},
            "only dpct.storage speaks SQL BROKEN",
            "dpct.workflows._bad -> sqlalchemy",
        ),
        (
            {
                "dpct.storage._one": "import dpct.storage._two\n",
                "dpct.storage._two": "import dpct.storage._one\n",
            },
            "no import cycles between sibling packages or modules BROKEN",
            "No cycles are allowed in dpct.storage",
        ),
        (
            {"dpct.newsubsystem": '"""Not given a layer."""\n'},
            "dpct layers BROKEN",
            "- dpct.newsubsystem",
        ),
    ],
    ids=[
        "pipeline-imports-storage",
        "pipeline-reads-settings",
        "storage-imports-upward",
        "sim-imports-pipeline",
        "pipeline-imports-pipeline",
        "private-reach-in",
        "sql-outside-storage",
        "cycle-in-storage",
        "subpackage-without-layer",
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tree: Path, plants: dict[str, str], contract: str, offence: str
) -> None:
    for module, source in plants.items():
        plant(tree, module, source)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert contract in result.stdout
    assert offence in result.stdout


def test_sqlalchemy_in_a_pipeline_is_refused_by_both_checks(tree: Path) -> None:
    plant(tree, "dpct.pipelines.gsr._bad", "import sqlalchemy\n")
    contracts = lint_imports(tree)
    assert contracts.returncode != 0
    assert "dpct.pipelines.gsr._bad -> sqlalchemy" in contracts.stdout
    ruff = ruff_check(tree, "src")
    assert ruff.returncode != 0
    assert "TID251" in ruff.stdout and "`sqlalchemy` is banned" in ruff.stdout
    assert "src/dpct/pipelines/gsr/_bad.py" in ruff.stdout


def test_ruff_lets_dpct_storage_speak_sql(tree: Path) -> None:
    plant(tree, "dpct.storage._extra", "import sqlalchemy\n\nsqlalchemy.text('SELECT 1')\n")
    assert ruff_check(tree, "src").returncode == 0
