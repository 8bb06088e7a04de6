"""What the tests share: the ``redox-ci`` command in a child process, waiting, required tools.

Import it as ``from tests.support import ...`` (pyproject.toml puts the repository root on
the path). Fixtures stay in ``conftest.py`` and the ``*_support.py`` module of their area.
"""

from __future__ import annotations

import ctypes
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


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None
    when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


# prctl(2): orphaned descendants are re-parented to the nearest ancestor that set this.
PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the parent of the daemons its children start (``buildbot start``,
    ``buildbot-worker start`` fork and leave them), so that ``alive`` can reap them.

    Otherwise they go to PID 1, and a PID 1 that does not reap (a container's, a CI
    runner's) keeps a killed master as a zombie: its twistd.pid then names a process that
    kill(pid, 0) still finds, and twistd refuses to start the master again.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped) counts as gone, and is reaped
    when it is this process's child (a daemon it adopted).

    Only for daemons and the processes kill_tree kills: reaping a ``subprocess.Popen`` child
    here would take its exit status from Popen."""
    state = _state(pid)
    if state in ("Z", "X"):
        try:  # not WNOHANG: a killed process's threads may still be exiting behind its "Z"
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return False
    return state is not None


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies are not: killpg(pgid, 0) finds a group
    of zombies too)."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


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
