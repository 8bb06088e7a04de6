"""Fixture flakes: copies of the Redox flake's layout in a real git repository.

Nix only builds a flake from committed files, so the bundled fixture is copied into
a fresh repository and committed. The main job and the tests use this; it is not
part of what a production worker runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
REDOX_FIXTURE = FIXTURES_DIR / "redox-flake"
GIT_IDENTITY = ["-c", "user.name=redox-ci fixture", "-c", "user.email=fixture@redox-ci.invalid"]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, check=True,
                          capture_output=True, text=True)
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit every file in ``repo``; return the new revision."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_fixture_repo(dest: Path, source: Path = REDOX_FIXTURE, branch: str = "main") -> str:
    """Copy ``source`` into a new git repository at ``dest``; return the first revision."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, dirs_exist_ok=True)
    git(dest, "init", "-q", "-b", branch)
    return commit_all(dest, "fixture flake")
