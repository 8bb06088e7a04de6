"""``redox-ci plan`` on the fixture flake: one real evaluation per system, the rules of the
real flake's shape (aliases once, runners never, throws with their message, checks and
packages deduplicated, import-from-derivation), the limits, and the errors a person sees."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from redox_ci.fixture import commit_all, git
from tests.support import requires, run_cli

pytestmark = pytest.mark.e2e


def plan_json(repo: Path, *args: str, env: dict | None = None) -> dict:
    proc = run_cli("plan", "--flake", str(repo), "--no-cache", *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def settings_file(tmp_path: Path, repo: Path, plan: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(f'[flake]\nrepo = "{repo}"\n[plan]\n{plan}\n')
    return path


def edit_flake(repo: Path, old: str, new: str) -> None:
    flake = repo / "flake.nix"
    text = flake.read_text()
    assert old in text
    flake.write_text(text.replace(old, new))
    commit_all(repo, "fixture changed")


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
    assert jobs[("x86_64-linux", "redox-default")]["stage"] == "infrastructure"
    assert jobs[("aarch64-linux", "kernel")]["status"] == "build"
    assert all(j["drv"].endswith(".drv") for j in data["jobs"] if j["status"] == "build")
    assert ("x86_64-linux", "runQemu") not in jobs
    # The forced derivation is another derivation than the flake's own.
    plain = subprocess.run(["nix", "eval", "--raw", f"{fixture_repo}#packages.x86_64-linux.redoxfs.drvPath"],
                           capture_output=True, text=True, check=True).stdout
    assert plain != jobs[("x86_64-linux", "redoxfs")]["drv"]


def test_plan_says_which_commit_it_evaluated(fixture_repo):
    """A reference without a revision (a branch's tip, as a forced build of a branch) is
    evaluated at some commit: the plan names it, so the pipeline is listed under it."""
    data = plan_json(fixture_repo, "--systems", "x86_64-linux", "--attrs", "cookbook")
    assert data["revision"] == git(fixture_repo, "rev-parse", "HEAD")


def test_real_shape_aliases_once_runners_never_checks_deduplicated(fixture_repo):
    data = plan_json(fixture_repo)
    jobs = {(j["system"], j["output"], j["attr"]): j for j in data["jobs"]}
    for system in ("x86_64-linux", "aarch64-linux"):
        built = [j for j in data["jobs"] if j["system"] == system and j["drv"]]
        drvs = [j["drv"] for j in built]
        assert len(drvs) == len(set(drvs)), "a derivation is built once"
        names = {n for j in built for n in [j["attr"], *j["aliases"]]}
        # Aliases: one job named by the settings, the other names listed.
        image = jobs[(system, "packages", "redox-default")]
        assert image["aliases"] == ["diskImage", "checks.redox-default-build"]
        assert "diskImage" not in {j["attr"] for j in built}
        assert jobs[(system, "packages", "default")]["aliases"] == ["diskImageGraphical", "redox-graphical"]
        # Checks that are packages are those packages' jobs; the others are jobs of their own.
        assert "checks.cookbook-build" in jobs[(system, "packages", "cookbook")]["aliases"]
        assert jobs[(system, "checks", "eval-users")]["stage"] == "other"
        # Runner scripts under every name, by their derivation, are never built.
        runners = {"runQemu", "bootTest", "functionalTest", "run-redox-default", "run-redox-default-qemu",
                   "snapshotRedox", "pauseRedox", "serve-cache", "run-redox-minimal", "checks.boot-test"}
        assert not runners & names
        ignored = {i["attr"]: i for i in data["ignored"] if i["system"] == system}
        assert runners <= set(ignored)
        assert ignored["bootTest"]["boots"] == "redox-minimal"
        assert ignored["checks.functional-test"]["boots"] == "redox-functional-test"
        assert "writeShellScriptBin, /bin/snapshot-redox" in ignored["snapshotRedox"]["reason"]
        # legacyPackages, apps and devShells are not planned (the dev shell is, as a check).
        assert not {"mkRedoxSystem", "apps"} & names
    assert data["summary"]["skipped"] == 0  # the default stage lists name only what the flake has


def test_attributes_that_throw_fail_with_their_message(fixture_repo):
    data = plan_json(fixture_repo)
    failed = {j["attr"]: j for j in data["jobs"] if j["status"] == "failed"}
    assert set(failed) == {"redox-libstdcxx-shim", "redox-llvm", "redox-cloud", "diskImageCloudHypervisor"}
    assert all(j["system"] == "aarch64-linux" for j in failed.values())
    assert failed["redox-llvm"]["reason"].startswith(
        "packages.aarch64-linux.redox-llvm does not evaluate: redox-libstdcxx-shim is x86_64-only: "
        "its prebuilt libstdc++ is for x86_64 hosts (flake.nix:")
    # The rest of the aarch64 plan stands, and its host tools build.
    assert {j["status"] for j in data["jobs"] if j["stage"] == "host-tools"} == {"build"}
    # One evaluation per system, and one more for each message.
    assert data["evaluation"]["x86_64-linux"]["stats"]["evaluations"] == 1
    assert data["evaluation"]["aarch64-linux"]["stats"]["evaluations"] == 1 + 4


def test_import_from_derivation(fixture_repo):
    """The host tools' test counts come from a .nix file built during evaluation. With
    import-from-derivation off, that error sinks the one evaluation (tryEval does not
    catch it): the attributes are evaluated again in halves until each failing one stands
    alone with Nix's message, and the rest of the plan stands."""
    data = plan_json(fixture_repo, "--systems", "x86_64-linux")
    cookbook = next(j for j in data["jobs"] if j["attr"] == "cookbook")
    assert cookbook["status"] == "build" and cookbook["checks"]
    env = {**os.environ, "NIX_CONFIG": os.environ["NIX_CONFIG"] + "\nallow-import-from-derivation = false"}
    data = plan_json(fixture_repo, "--systems", "x86_64-linux", env=env)
    failed = {j["attr"]: j["reason"] for j in data["jobs"] if j["status"] == "failed"}
    # The checks that are those packages fail too (no derivation tells them apart as aliases);
    # the x86_64 installer does not read the counts.
    assert set(failed) == {"cookbook", "redoxfs", "cookbook-build", "redoxfs-build"}
    assert all("allow-import-from-derivation" in r for r in failed.values()), failed
    assert {j["attr"] for j in data["jobs"] if j["status"] == "build"} >= {"installer", "kernel", "redox-minimal"}
    stats = data["evaluation"]["x86_64-linux"]
    assert "allow-import-from-derivation" in stats["split"] and stats["stats"]["evaluations"] > 2


def test_memory_limit_fails_the_plan_clearly(tmp_path, fixture_repo):
    edit_flake(fixture_repo, 'fstools = simple "fstools" [ ];', 'fstools = simple "fstools" [ ];\n'
               '            hog = if builtins.length (builtins.genList toString 30000000) > 0 then simple "hog" [ ] else null;')
    settings = settings_file(tmp_path, fixture_repo, "eval_memory_mb = 400")
    proc = run_cli("plan", "--flake", str(fixture_repo), "--settings", str(settings), "--no-cache",
                   "--systems", "x86_64-linux", "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ran out of memory: it needs more than the limit of 400 MiB ([plan].eval_memory_mb)" in proc.stderr


def test_time_limit_fails_the_plan_clearly(tmp_path, fixture_repo):
    # An import-from-derivation that takes a minute to build: the evaluation waits for it.
    # A name of its own, so that no earlier run has built it.
    edit_flake(fixture_repo, 'fstools = simple "fstools" [ ];', 'fstools = simple "fstools" [ ];\n'
               f'            slow = import (derivation {{ inherit system; name = "slow-{uuid.uuid4().hex}.nix"; '
               'builder = busybox; args = [ "sh" "-c" "sleep 60; echo 1 > $out" ]; });')
    settings = settings_file(tmp_path, fixture_repo, "eval_timeout = 3")
    proc = run_cli("plan", "--flake", str(fixture_repo), "--settings", str(settings), "--no-cache",
                   "--systems", "x86_64-linux", "--json", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "took longer than the limit of 3 s ([plan].eval_timeout)" in proc.stderr


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
    from redox_ci.fixture import commit_all, git
    (fixture_repo / "flake.nix").write_text("{ outputs = { self }: { packages = throw \"broken on purpose\"; }; }")
    commit_all(fixture_repo, "break")
    proc = run_cli("plan", "--flake", str(fixture_repo))
    assert proc.returncode == 2
    assert "broken on purpose" in proc.stderr and "Traceback" not in proc.stderr
