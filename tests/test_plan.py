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
    assert {i.attr for i in plan.ignored} == {"runQemu", "lib"}
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
