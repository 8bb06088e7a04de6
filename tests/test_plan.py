"""The plan: pure classification rules, then one real evaluation of the fixture flake."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from redox_ci import flake
from redox_ci.config import PlanSettings
from redox_ci.errors import FlakeError
from redox_ci.plan import build_plan, parse_attr_list

SETTINGS = PlanSettings(stages={"host-tools": ["cookbook", "redoxfs"], "infrastructure": ["diskImage"]},
                        runners=["runQemu"], checks=["cookbook", "redoxfs"])


def pkg(name, do_check=False, forced=False, drv=True):
    return {"kind": "package", "drv": f"/nix/store/{'a' * 32}-{name}.drv" if drv else None,
            "outputs": [{"name": "out", "path": f"/nix/store/{'b' * 32}-{name}"}],
            "doCheck": do_check, "forced": forced, "canForce": True}


EVAL = {"x86_64-linux": {"cookbook": pkg("cookbook", do_check=True), "redoxfs": pkg("redoxfs", forced=True),
                         "runQemu": {"kind": "runner"}, "extra": pkg("extra"),
                         "broken": {"kind": "eval-error"}, "lib": {"kind": "not-a-derivation"}},
        "aarch64-linux": None}


def jobs_by_name(plan):
    return {(j.system, j.attr): j for j in plan.jobs}


def test_classification():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux", "aarch64-linux"])
    jobs = jobs_by_name(plan)
    assert jobs[("x86_64-linux", "cookbook")].status == "build"
    assert jobs[("x86_64-linux", "cookbook")].checks and not jobs[("x86_64-linux", "cookbook")].checks_forced
    assert jobs[("x86_64-linux", "redoxfs")].checks_forced
    assert "turned it on" in jobs[("x86_64-linux", "redoxfs")].reason
    assert jobs[("x86_64-linux", "diskImage")].status == "skipped"
    assert jobs[("x86_64-linux", "diskImage")].reason == "the flake has no packages.x86_64-linux.diskImage"
    assert jobs[("x86_64-linux", "extra")].stage == "other" and jobs[("x86_64-linux", "extra")].status == "build"
    assert jobs[("x86_64-linux", "broken")].status == "failed"
    assert ("x86_64-linux", "runQemu") not in jobs and ("x86_64-linux", "lib") not in jobs
    assert {i["attr"] for i in plan.ignored} == {"runQemu", "lib"}
    arm = [j for j in plan.jobs if j.system == "aarch64-linux"]
    assert {j.attr for j in arm} == {"cookbook", "redoxfs", "diskImage"}
    assert all(j.status == "skipped" and j.reason == "the flake has no packages.aarch64-linux" for j in arm)


def test_stage_order_and_summary():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"])
    stages = [j.stage for j in plan.jobs]
    assert stages == sorted(stages, key=["host-tools", "infrastructure", "other"].index)
    assert plan.summary() == {"build": 3, "cached": 0, "skipped": 1, "failed": 1}


def test_only_attrs_and_unknown_requested():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"], only_attrs=["redoxfs", "nope"])
    jobs = jobs_by_name(plan)
    assert set(jobs) == {("x86_64-linux", "redoxfs"), ("x86_64-linux", "nope")}
    assert jobs[("x86_64-linux", "nope")].status == "skipped"


def test_cached_outputs_are_not_built():
    seen = []

    def cached(paths):
        seen.append(paths)
        return {p for p in paths if p.endswith("-cookbook")}
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"], cached=cached)
    jobs = jobs_by_name(plan)
    assert jobs[("x86_64-linux", "cookbook")].status == "cached"
    assert jobs[("x86_64-linux", "redoxfs")].status == "build"
    assert len(seen) == 1  # one question to the cache for the whole plan


@pytest.mark.parametrize("text", ["a;b", "$(x)", "a`b`", "../x", "-rf"])
def test_attr_list_refuses_non_identifiers(text):
    with pytest.raises(ValueError):
        parse_attr_list(text)


def test_attr_list_parses():
    assert parse_attr_list("cookbook, redoxfs redoxfs  installer") == ["cookbook", "redoxfs", "installer"]


def test_nix_string_escapes():
    assert flake.nix_string('a"b\\c${d}') == '"a\\"b\\\\c\\${d}"'


@pytest.mark.parametrize("branch, rev", [("main; rm", None), ("--x", None), ("a..b", None),
                                         ("main", "zz"), ("main", "abc1234")])
def test_flake_ref_refuses_bad_branch_or_rev(branch, rev):
    with pytest.raises(FlakeError):
        flake.flake_ref_for("/srv/repo", branch, rev)


def test_flake_refs():
    rev = "a" * 40
    assert flake.flake_ref_for("/srv/r", "main", rev) == f"git+file:///srv/r?ref=main&rev={rev}"
    assert flake.flake_ref_for("https://github.com/brittonr/redoxos-nix", "main") == \
        "git+https://github.com/brittonr/redoxos-nix?ref=main"
    assert flake.flake_ref_for("github:brittonr/redoxos-nix", "main", rev) == f"github:brittonr/redoxos-nix?rev={rev}"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "redox_ci", *args], capture_output=True, text=True)


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
