"""``redox-ci plan`` on the fixture flake: one real evaluation, and the errors a person sees."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import requires, run_cli

pytestmark = pytest.mark.e2e


def test_plan_of_the_fixture_flake(fixture_repo):
    proc = run_cli("plan", "--flake", str(fixture_repo), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jobs = {(j["system"], j["attr"]): j for j in data["jobs"]}
    assert set(data) >= {"flake", "jobs"}
    assert set(jobs[("x86_64-linux", "cookbook")]) >= {"attr", "system", "stage", "drv", "checks", "status", "reason"}
    assert jobs[("x86_64-linux", "cookbook")]["checks"] is True
    assert jobs[("x86_64-linux", "redoxfs")]["checks_forced"] is True
    assert jobs[("x86_64-linux", "installer")]["checks"] is True
    assert jobs[("x86_64-linux", "fstools")]["checks"] is False
    assert jobs[("x86_64-linux", "diskImage")]["stage"] == "infrastructure"
    assert jobs[("aarch64-linux", "kernel")]["status"] == "skipped"
    assert all(j["drv"].endswith(".drv") for j in data["jobs"] if j["system"] == "x86_64-linux")
    assert ("x86_64-linux", "runQemu") not in jobs
    # The forced derivation is another derivation than the flake's own.
    plain = subprocess.run(["nix", "eval", "--raw", f"{fixture_repo}#packages.x86_64-linux.redoxfs.drvPath"],
                           capture_output=True, text=True, check=True).stdout
    assert plain != jobs[("x86_64-linux", "redoxfs")]["drv"]


@pytest.mark.parametrize("ref, expected", [
    ("/nonexistent/flake", "getting status of '/nonexistent/flake'"),
    ("x;rm -rf /", "not a flake reference"),
])
def test_bad_flake_exits_2_with_the_nix_error(ref, expected):
    requires("nix")
    proc = run_cli("plan", "--flake", ref, "--json")
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_flake_that_does_not_evaluate(tmp_path, fixture_repo):
    from redox_ci.fixture import commit_all
    (fixture_repo / "flake.nix").write_text("{ outputs = { self }: { packages = throw \"broken on purpose\"; }; }")
    commit_all(fixture_repo, "break")
    proc = run_cli("plan", "--flake", str(fixture_repo))
    assert proc.returncode == 2
    assert "broken on purpose" in proc.stderr and "Traceback" not in proc.stderr
