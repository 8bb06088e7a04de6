"""Shared fixtures: a Nix environment with flakes on and no outside substituters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from redox_ci.fixture import make_fixture_repo
from redox_ci.nix import FLAKE_FEATURES
from tests.support import adopt_orphans, requires

NIX_CONFIG = f"{FLAKE_FEATURES}\nsubstituters =\n"


def pytest_configure(config):
    adopt_orphans()


@pytest.fixture(autouse=True, scope="session")
def _nix_config():
    old = os.environ.get("NIX_CONFIG")
    os.environ["NIX_CONFIG"] = NIX_CONFIG
    yield
    if old is None:
        os.environ.pop("NIX_CONFIG", None)
    else:
        os.environ["NIX_CONFIG"] = old


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    """A fresh git repository holding the bundled Redox-layout fixture flake."""
    requires("nix")
    repo = tmp_path / "redox-flake"
    make_fixture_repo(repo)
    return repo
