"""redox-ci build on a worker whose store lacks the planned derivation (another host)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from redox_ci.fixture import commit_all, salt_derivations
from tests.support import run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def fixture_repo(fixture_repo):
    """The fixture flake with derivations of its own: this module deletes them from the store,
    which Nix refuses while anything (another test's or an earlier run's gcroot) keeps them."""
    salt_derivations(fixture_repo, uuid.uuid4().hex)
    commit_all(fixture_repo, "salted")
    return fixture_repo


def planned(repo, attr):
    proc = run_cli("plan", "--flake", str(repo), "--systems", "x86_64-linux", "--attrs", attr, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["jobs"][0]


def forget(drv):
    """Remove the derivation from the store, as on a host that never evaluated the flake.

    Only derivations no other derivation refers to can go (leaf attributes)."""
    # With its outputs: Nix keeps a derivation alive while its outputs are valid (and the
    # daemon lets no one ignore liveness); a host that never evaluated the flake has built
    # none of them either.
    outputs = subprocess.run(["nix-store", "--query", "--outputs", drv], capture_output=True, text=True,
                             check=True).stdout.split()
    subprocess.run(["nix-store", "--delete", *outputs, drv], capture_output=True, text=True, check=True)
    assert subprocess.run(["nix-store", "--check-validity", drv], capture_output=True).returncode != 0


def test_missing_derivation_is_instantiated_again_and_built(fixture_repo):
    job = planned(fixture_repo, "redoxfs")
    forget(job["drv"])
    proc = run_cli("build", "--drv", job["drv"], "--attr", "redoxfs", "--system", "x86_64-linux", "--checks",
                   "--checks-forced", "--flake", str(fixture_repo), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "success" and result["tests"]["passed"] == 38


def test_a_different_evaluation_is_refused(fixture_repo):
    job = planned(fixture_repo, "fstools")
    forget(job["drv"])
    # Instantiated as another attribute, the derivation comes out another path.
    proc = run_cli("build", "--drv", job["drv"], "--attr", "cookbook", "--system", "x86_64-linux",
                   "--flake", str(fixture_repo), "--json")
    assert proc.returncode == 2
    assert "the plan said" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_derivation_without_a_flake_is_a_clear_error(fixture_repo):
    job = planned(fixture_repo, "sodium")
    forget(job["drv"])
    proc = run_cli("build", "--drv", job["drv"], "--attr", "sodium", "--system", "x86_64-linux")
    assert proc.returncode == 2
    assert "is not in this worker's store; pass --flake" in proc.stderr
