"""Shared fixtures: a Nix environment with flakes on and no outside substituters."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from redox_ci.fixture import make_fixture_repo
from redox_ci.nix import FLAKE_FEATURES

NIX_CONFIG = f"{FLAKE_FEATURES}\nsubstituters =\n"


@pytest.fixture(autouse=True, scope="session")
def _nix_config():
    old = os.environ.get("NIX_CONFIG")
    os.environ["NIX_CONFIG"] = NIX_CONFIG
    yield
    if old is None:
        os.environ.pop("NIX_CONFIG", None)
    else:
        os.environ["NIX_CONFIG"] = old


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


def require_nix():
    if not shutil.which("nix"):
        pytest.skip("nix is not installed (scripts/install.sh installs nix-bin)")


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    """A fresh git repository holding the bundled Redox-layout fixture flake."""
    require_nix()
    repo = tmp_path / "redox-flake"
    make_fixture_repo(repo)
    return repo
