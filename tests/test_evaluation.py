"""Each system's evaluation on a worker of that system: which builder evaluates which
system, the plan build's own evaluation of the rest, and the systems' plans merged into one."""

from __future__ import annotations

import pytest

from redox_ci.config import FlakeSettings, LoadedSettings, Settings, WorkerSpec
from redox_ci.master.evaluation import (EVAL_STAGE, EvaluateSystems, PlanMismatch, eval_builders,
                                        judge_evaluations, merge_plans, split_systems)
from redox_ci.master.pipeline import systems_built
from redox_ci.plan import Job, JobStatus, Plan

pytestmark = pytest.mark.unit

X86, ARM = "x86_64-linux", "aarch64-linux"


def loaded(*workers: WorkerSpec) -> LoadedSettings:
    settings = Settings(flake=FlakeSettings(repo="https://example.invalid/redox", systems=[X86, ARM]))
    return LoadedSettings(settings, path=None, workers=list(workers))


def job(attr: str, system: str, status: JobStatus = JobStatus.BUILD) -> Job:
    return Job(attr, system, "other", f"/nix/store/{'d' * 32}-{attr}.drv", False, status, "")


def test_each_system_is_evaluated_on_its_workers_native_first():
    arm_box = WorkerSpec(name="arm", systems=[ARM], max_builds=2)
    x86_box = WorkerSpec(name="x86", systems=[X86], emulated_systems=[ARM])
    builders = {b.system: b for b in eval_builders(loaded(x86_box, arm_box))}
    assert builders[X86].workers == ["x86"] and builders[X86].name == f"{X86}/{EVAL_STAGE}"
    # The native aarch64 slots first, then the x86 host that emulates it.
    assert builders[ARM].workers == ["arm-1", "arm-2", "x86"] and builders[ARM].native == ["arm-1", "arm-2"]


def test_a_system_no_worker_builds_is_evaluated_by_the_plan_build():
    builders = eval_builders(loaded(WorkerSpec(name="x86", systems=[X86])))
    assert [b.system for b in builders] == [X86]
    assert split_systems([X86, ARM], {b.system for b in builders}) == ([X86], [ARM])


def test_the_plan_build_evaluates_what_its_worker_builds():
    # Its worker builds x86_64 (natively or by emulation): no evaluation build for it.
    assert split_systems([X86, ARM], {X86, ARM}, own={X86}) == ([ARM], [X86])
    assert split_systems([X86, ARM], {X86, ARM}, own={X86, ARM}) == ([], [X86, ARM])
    # A system no worker builds stays with the plan build, to list its jobs as SKIPPED.
    assert split_systems([X86, ARM], {ARM}, own=set()) == ([ARM], [X86])


def test_the_plan_build_prefers_a_worker_that_builds_the_most_systems():
    x86 = WorkerSpec(name="x86", systems=[X86], max_builds=2)
    both = WorkerSpec(name="both", systems=[X86], emulated_systems=[ARM])
    assert systems_built([x86, both], [X86, ARM]) == {"x86-1": 1, "x86-2": 1, "both": 2}
    assert systems_built([both], [X86]) == {"both": 1}


def test_the_systems_plans_merge_into_one():
    x86 = Plan("F", [job("cookbook", X86), job("kernel", X86)], evaluation={X86: {"seconds": 3}})
    arm = Plan("F", [job("cookbook", ARM, JobStatus.FAILED)], evaluation={ARM: {"seconds": 9}})
    merged = merge_plans([x86, arm])
    assert [j.name for j in merged.jobs] == [f"{X86}.cookbook", f"{X86}.kernel", f"{ARM}.cookbook"]
    assert merged.evaluation == {X86: {"seconds": 3}, ARM: {"seconds": 9}}
    assert merged.summary()["failed"] == 1 and merged.flake == "F"
    assert merged.find(ARM, "cookbook").status == JobStatus.FAILED
    assert merge_plans([]) == Plan("", [])


def test_the_merged_plan_keeps_the_revision_the_systems_agree_on():
    rev, other = "a" * 40, "b" * 40
    assert merge_plans([Plan("F", [], revision=rev), Plan("F", [], revision=rev)]).revision == rev
    with pytest.raises(PlanMismatch, match=f"different revisions \\({rev}, {other}\\)"):
        merge_plans([Plan("F", [], revision=rev), Plan("F", [], revision=other)])


def test_a_failed_evaluation_stops_the_pipeline_with_its_reason():
    ok = {"system": X86, "results": 0, "state_string": "plan: 3 build", "planned": True}
    warned = {**ok, "system": ARM, "results": 1}
    assert judge_evaluations([ok, warned]) is None
    failed = {"system": ARM, "results": 2, "state_string": "took longer than the limit of 15 s", "planned": False}
    assert judge_evaluations([ok, failed]) == f"{ARM}: took longer than the limit of 15 s"


def test_the_evaluations_started_are_the_forced_systems_with_a_builder():
    props = {"flake_ref": "git+file:///r?rev=" + "a" * 40, "systems": [X86, ARM], "attrs": "cookbook"}

    class Step(EvaluateSystems):
        def getProperty(self, name, default=None):
            return props.get(name, default)

    step = Step({X86: f"{X86}/eval"}, [X86, ARM])
    started = step.getSchedulersAndProperties()
    assert [s["sched_name"] for s in started] == [f"{X86}/eval"]
    given = started[0]["props_to_set"]
    assert given["systems"] == [X86] and given["attrs"] == "cookbook" and given["flake_ref"] == props["flake_ref"]
    assert given["virtual_builder_name"] == f"{X86}.evaluation" and given["virtual_builder_tags"] == [X86, "eval"]
    props["systems"] = [ARM]
    assert step.routed() == []
    # The plan build's worker builds x86_64 itself: it evaluates it, no evaluation build.
    props.update(systems=[X86, ARM], worker_systems=[X86])
    assert step.routed() == []
    props.update(worker_systems=["riscv64-linux"], worker_emulated_systems=[])
    assert step.routed() == [X86]
