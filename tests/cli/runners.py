"""Two ways to run ``dpct ARGS`` in a test: in this process, or as the real command.

Both give the exit code, stdout and stderr as a ``CompletedProcess``. ``InProcess``
goes through ``dpct.cli.main`` (the same mapping of errors to one line and an exit
code) without an interpreter start per command; ``Cli`` is for what needs a process of
its own (a console script's exit status, signals, a terminal, a second program running
side by side).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

from typer.testing import CliRunner

from dpct.cli import main
from dpct.cli._context import settings as cli_settings


def cli_env(home: Path, url: str) -> dict[str, str]:
    """This environment without its DPCT_* variables, pointed at ``home`` and ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPCT_")}
    env.update(
        DPCT_HOME=str(home),
        DPCT_DATABASE_URL=url,
        DPCT_TASK_MODULES="dpct.testing.tasks",
        COLUMNS="250",  # wide tables; errors must stay one line whatever the width
    )
    return env


class Commands:
    """What both runners share: checked exit codes, JSON output, one-line errors."""

    def __init__(self, env: dict[str, str], cwd: Path | None = None) -> None:
        self.env = env
        self.cwd = cwd

    def run(
        self, *args: str, rc: int = 0, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def many(self, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
        return [self.run(*args) for args in commands]

    def errors(self, commands: list[list[str]], rc: int) -> list[str]:
        """Run failing commands; return their one-line messages."""
        return [self.error(*args, rc=rc) for args in commands]

    def error(self, *args: str, rc: int, **env: str) -> str:
        """Run a command that must fail; return its one-line message."""
        proc = self.run(*args, rc=rc, **env)
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, f"the error should be one line, got:\n{proc.stderr}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]

    @staticmethod
    def check(
        args: tuple[str, ...], proc: subprocess.CompletedProcess[str], rc: int
    ) -> subprocess.CompletedProcess[str]:
        assert proc.returncode == rc, (
            f"dpct {' '.join(args)}: exit {proc.returncode}, expected {rc}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return proc


class Cli(Commands):
    """Runs ``python -m dpct`` as a subprocess with this environment."""

    def run(
        self, *args: str, rc: int = 0, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "dpct", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return self.check(args, proc, rc)


class InProcess(Commands):
    """Runs ``dpct ARGS`` through ``main()`` in this process, with this environment.

    Not thread-safe (it swaps the process's standard streams and environment); a
    ``timeout`` is accepted for the same signature and not enforced.
    """

    def run(
        self, *args: str, rc: int = 0, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DPCT_")}
        overrides.update(self.env, **env)
        cli_settings.cache_clear()
        with (
            CliRunner().isolation(env=overrides) as (out, err, _),
            mock.patch.object(sys, "argv", ["dpct", *args]),
        ):
            try:
                main()
                code: int | str = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 0
            except Exception:  # what an operator would see as a traceback
                code = "traceback"
                sys.stderr.write(traceback.format_exc())
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
        cli_settings.cache_clear()
        proc = subprocess.CompletedProcess(["dpct", *args], code, stdout, stderr)
        return self.check(args, proc, rc)  # type: ignore[arg-type]
