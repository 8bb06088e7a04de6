"""The plan's pure rules: classification, stages, attribute lists, flake references (no Nix).

``test_plan_cli.py`` evaluates the fixture flake with real Nix."""

from __future__ import annotations

import pytest

from redox_ci import flake
from redox_ci.config import PlanSettings
from redox_ci.errors import FlakeError
from redox_ci.names import parse_attrs
from redox_ci.plan import build_plan

pytestmark = pytest.mark.unit

SETTINGS = PlanSettings(stages={"host-tools": ["cookbook", "redoxfs"], "infrastructure": ["diskImage"]},
                        runners=["runQemu"], checks=["cookbook", "redoxfs"])


def pkg(name, do_check=False, forced=False, drv=True, same_as=None):
    """An evaluated package; ``same_as``: another name of the same derivation (an alias)."""
    plain = f"/nix/store/{'a' * 32}-{same_as or name}.drv"
    return {"kind": "package", "drv": (f"/nix/store/{'f' * 32}-{name}.drv" if forced else plain) if drv else None,
            "plainDrv": plain, "outputs": [{"name": "out", "path": f"/nix/store/{'b' * 32}-{same_as or name}"}],
            "doCheck": do_check, "forced": forced, "canForce": True}


def script(dest):
    return {"kind": "runner", "script": True, "destination": dest}


EVAL = {"x86_64-linux": {"packages": {"cookbook": pkg("cookbook", do_check=True), "redoxfs": pkg("redoxfs", forced=True),
                                      "runQemu": {"kind": "runner", "script": False}, "extra": pkg("extra"),
                                      "broken": {"kind": "eval-error", "error": "broken on purpose (flake.nix:9:5)"},
                                      "lib": {"kind": "not-a-derivation"}},
                         "checks": None},
        "aarch64-linux": {"packages": None, "checks": None}}


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
    assert {i.attr for i in plan.ignored} == {"runQemu", "lib"}
    arm = [j for j in plan.jobs if j.system == "aarch64-linux"]
    assert {j.attr for j in arm} == {"cookbook", "redoxfs", "diskImage"}
    assert all(j.status == "skipped" and j.reason == "the flake has no packages.aarch64-linux" for j in arm)


def test_a_throw_is_a_failed_job_quoting_the_message():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"])
    broken = jobs_by_name(plan)[("x86_64-linux", "broken")]
    assert broken.reason == "packages.x86_64-linux.broken does not evaluate: broken on purpose (flake.nix:9:5)"
    unasked = {"x86_64-linux": {"packages": {"broken": {"kind": "eval-error", "error_unknown": "not asked (limit)"}}}}
    reason = build_plan("F", unasked, SETTINGS, ["x86_64-linux"]).jobs[-1].reason
    assert "does not evaluate" in reason and "not asked (limit)" in reason


def test_a_system_that_does_not_evaluate_fails_its_expected_jobs():
    evaluation = {**EVAL, "aarch64-linux": {"error": "infinite recursion encountered"}}
    plan = build_plan("F", evaluation, SETTINGS, ["x86_64-linux", "aarch64-linux"])
    arm = [j for j in plan.jobs if j.system == "aarch64-linux"]
    assert {j.attr for j in arm} == {"cookbook", "redoxfs", "diskImage"}
    assert all(j.status == "failed" and "infinite recursion" in j.reason for j in arm)
    assert plan.evaluation["aarch64-linux"]["error"] == "infinite recursion encountered"


ALIASED = {"x86_64-linux": {
    "packages": {"redox-default": pkg("redox-default"), "diskImage": pkg("diskImage", same_as="redox-default"),
                 "default": pkg("default", same_as="redox-graphical"), "redox-graphical": pkg("redox-graphical"),
                 "diskImageGraphical": pkg("diskImageGraphical", same_as="redox-graphical"),
                 "cookbook": pkg("cookbook", do_check=True), "redoxfs": pkg("redoxfs", forced=True),
                 "bootTest": script("/bin/boot-test"), "run-redox-default": script("/bin/run-redox-default"),
                 "snapshotRedox": script("/bin/snapshot-redox"), "serve-cache": pkg("serve-cache")},
    "checks": {"redox-default-build": pkg("redox-default-build", same_as="redox-default"),
               "cookbook-build": pkg("cookbook-build", same_as="cookbook"),
               "redoxfs-build": pkg("redoxfs-build", same_as="redoxfs"),
               "boot-test": script("/bin/boot-test"), "eval-users": pkg("eval-users"),
               "type-bool": pkg("type-bool"),
               "diskImage": pkg("diskImage", same_as="checks-only-diskimage")}}}


def test_aliases_and_checks_that_are_packages_are_one_job():
    plan = build_plan("F", ALIASED, SETTINGS, ["x86_64-linux"])
    by_drv = {}
    for j in plan.jobs:
        if j.drv:
            by_drv.setdefault(j.drv, []).append(j.name)
    assert all(len(names) == 1 for names in by_drv.values()), by_drv  # each derivation built once
    jobs = {j.name: j for j in plan.jobs}
    # The settings' name wins; the others are aliases.
    assert jobs["x86_64-linux.diskImage"].aliases == ["redox-default", "checks.redox-default-build"]
    assert jobs["x86_64-linux.diskImage"].stage == "infrastructure"
    # No settings' name: packages first, then the shortest, then alphabetical.
    assert jobs["x86_64-linux.default"].aliases == ["diskImageGraphical", "redox-graphical"]
    assert jobs["x86_64-linux.cookbook"].aliases == ["checks.cookbook-build"]
    # The forced derivation is built, for the package and the check alike.
    assert jobs["x86_64-linux.redoxfs"].checks_forced and jobs["x86_64-linux.redoxfs"].aliases == ["checks.redoxfs-build"]
    assert jobs["x86_64-linux.redoxfs"].drv.startswith(f"/nix/store/{'f' * 32}")
    # A check that is no package is a job of its own, named apart from a package of the same name.
    assert jobs["x86_64-linux.checks.eval-users"].output == "checks"
    assert jobs["x86_64-linux.checks.diskImage"].drv != jobs["x86_64-linux.diskImage"].drv
    assert plan.find("x86_64-linux", "redox-default") is jobs["x86_64-linux.diskImage"]
    assert plan.find("x86_64-linux", "redox-default-build") is jobs["x86_64-linux.diskImage"]


def test_runner_scripts_are_never_jobs():
    settings = PlanSettings(stages=SETTINGS.stages, checks=SETTINGS.checks, runners=[],
                            runner_patterns=["serve-*"], vm_tests={"bootTest": "redox-minimal",
                                                                   "boot-test": "redox-minimal"})
    plan = build_plan("F", ALIASED, settings, ["x86_64-linux"])
    assert not [j for j in plan.jobs if {"bootTest", "run-redox-default", "snapshotRedox", "serve-cache"}
                & set(j.names())]
    ignored = {i.attr: i for i in plan.ignored}
    assert set(ignored) == {"bootTest", "run-redox-default", "snapshotRedox", "serve-cache", "checks.boot-test"}
    assert ignored["bootTest"].boots == "redox-minimal" and "booting redox-minimal" in ignored["bootTest"].reason
    assert ignored["checks.boot-test"].boots == "redox-minimal"
    assert "writeShellScriptBin, /bin/snapshot-redox" in ignored["snapshotRedox"].reason
    assert "runner_patterns" in ignored["serve-cache"].reason


def test_stage_order_and_summary():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"])
    stages = [j.stage for j in plan.jobs]
    assert stages == sorted(stages, key=["host-tools", "infrastructure", "other"].index)
    assert plan.summary() == {"build": 3, "cached": 0, "skipped": 1, "failed": 1}


def test_only_attrs_and_unknown_requested():
    # The evaluation was asked for these names only (flake.EvalParams.only).
    evaluation = {"x86_64-linux": {"packages": {"redoxfs": EVAL["x86_64-linux"]["packages"]["redoxfs"]}}}
    plan = build_plan("F", evaluation, SETTINGS, ["x86_64-linux"], only_attrs=["redoxfs", "nope"])
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


def test_tests_that_cannot_be_turned_on_are_marked():
    evaluation = {"x86_64-linux": {"packages": {"redoxfs": {**pkg("redoxfs"), "canForce": False}}}}
    job = build_plan("F", evaluation, SETTINGS, ["x86_64-linux"], only_attrs=["redoxfs"]).jobs[0]
    assert job.checks_unavailable and not job.checks and "no overrideAttrs" in job.reason


def test_the_real_flakes_settings_file_loads_with_the_default_stages():
    from pathlib import Path

    from redox_ci.config import DEFAULT_STAGES
    from redox_ci.settings_file import load
    loaded = load(Path(__file__).parent.parent / "settings.nix-redox.toml", workers=False)
    assert loaded.settings.flake.repo == "https://github.com/brittonr/nix-redox"
    assert loaded.settings.plan.stages == DEFAULT_STAGES and loaded.settings.plan.outputs == ["packages", "checks"]


def test_glob_patterns_become_posix_regexes():
    assert flake.glob_regex("run-redox-*") == "run[-]redox[-].*"
    assert flake.glob_regex("*Test") == ".*Test"
    assert flake.glob_regex("a[!b]?") == "a[^b]."


@pytest.mark.parametrize("text", ["a;b", "$(x)", "a`b`", "../x", "-rf"])
def test_attr_list_refuses_non_identifiers(text):
    with pytest.raises(ValueError):
        parse_attrs(text)


def test_attr_list_parses():
    assert parse_attrs("cookbook, redoxfs redoxfs  installer") == ["cookbook", "redoxfs", "installer"]


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


def _build_job(attr: str, stage: str = "cross-system", status=None) -> "Job":
    from redox_ci.plan import Job, JobStatus
    return Job(attr, "x86_64-linux", stage, f"/nix/store/{attr:x<32}-{attr}.drv", False, status or JobStatus.BUILD)


def test_jobs_to_build_are_after_the_nearest_jobs_their_closure_holds():
    from redox_ci.plan import JobStatus, with_dependencies
    relibc, base, sysroot, fstools = (_build_job(a) for a in ("relibc", "base", "sysroot", "fstools"))
    cached = _build_job("cookbook", status=JobStatus.CACHED)
    stdenv, src = "/nix/store/" + "s" * 32 + "-stdenv.drv", "/nix/store/" + "r" * 32 + "-src"
    references = {
        relibc.drv: [stdenv, src, relibc.drv],  # a path may name itself
        base.drv: [relibc.drv, stdenv, cached.drv],
        # sysroot needs relibc through base and directly: base is the nearest, relibc also named
        sysroot.drv: [base.drv, relibc.drv, stdenv],
        # a job reached only through a derivation that is no job
        fstools.drv: ["/nix/store/" + "m" * 32 + "-middle.drv"],
        "/nix/store/" + "m" * 32 + "-middle.drv": [sysroot.drv, src],
        stdenv: [], cached.drv: [stdenv],
    }
    jobs = with_dependencies([relibc, base, sysroot, fstools, cached], references)
    assert {j.attr: j.after for j in jobs} == {
        "relibc": [], "base": ["x86_64-linux.relibc"],
        "sysroot": ["x86_64-linux.base", "x86_64-linux.relibc"],
        "fstools": ["x86_64-linux.sysroot"], "cookbook": []}


def test_dependencies_survive_a_closure_deeper_than_the_recursion_limit():
    from redox_ci.plan import with_dependencies
    top, bottom = _build_job("top"), _build_job("bottom")
    chain = [f"/nix/store/{i:032d}-link.drv" for i in range(5000)]
    references = {top.drv: [chain[0]], **{a: [b] for a, b in zip(chain, chain[1:])}, chain[-1]: [bottom.drv]}
    assert with_dependencies([top, bottom], references)[0].after == ["x86_64-linux.bottom"]
