"""What the tests share: the ``redox-ci`` command in a child process, waiting, required tools.

Import it as ``from tests.support import ...`` (pyproject.toml puts the repository root on
the path). Fixtures stay in ``conftest.py`` and the ``*_support.py`` module of their area.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The redox-ci command, run by this interpreter whatever is on PATH (the PATH of some
# tests has no redox-ci on it), as a Buildbot step runs it: a child process.
CLI = [sys.executable, "-m", "redox_ci"]
# A command that takes longer is stuck: fail the test rather than hang the suite.
CLI_TIMEOUT = 600


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """``redox-ci ARGS`` in a child process; stdout and stderr captured as text."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ), cwd=cwd)


def run_json(*args: str, **kwargs) -> tuple[int, dict]:
    """``redox-ci ARGS --json``: the exit code and the one JSON document it printed."""
    proc = run_cli(*args, "--json", **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON on stdout (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by init) counts as gone."""
    return _state(pid) not in (None, "Z", "X")


def wait_for(what: str, check, timeout: float, step: float = 0.5):
    """Wait for a condition a test needs before acting (not a measurement); return its value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s (last: {last!r})")


def requires(*tools: str, hint: str = "scripts/install.sh installs it") -> None:
    """Skip the test, naming what is missing, unless every tool is on PATH."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed ({hint})")
