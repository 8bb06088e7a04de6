"""One Job type on both halves: the plan's JSON form, and the master starting its jobs."""

from __future__ import annotations

import json

import pytest

from redox_ci.config import PlanSettings
from redox_ci.plan import Job, JobStatus, Plan, build_plan

pytestmark = pytest.mark.unit

SETTINGS = PlanSettings(stages={"host-tools": ["cookbook", "redoxfs"], "infrastructure": ["diskImage"]},
                        runners=[], checks=["redoxfs"])


def package(name: str, forced: bool = False) -> dict:
    return {"kind": "package", "drv": f"/nix/store/{'d' * 32}-{name}.drv", "doCheck": False, "forced": forced,
            "outputs": [{"name": "out", "path": f"/nix/store/{'o' * 32}-{name}"}]}


EVAL = {"x86_64-linux": {"packages": {"cookbook": package("cookbook"), "redoxfs": package("redoxfs", forced=True),
                                      "lib": {"kind": "not-a-derivation"}}},
        "aarch64-linux": {"packages": None}}


def test_plan_json_round_trip():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux", "aarch64-linux"])
    data = json.loads(json.dumps(plan.to_json()))
    assert Plan.from_json(data) == plan
    assert data["summary"] == plan.summary() and data["jobs"][0]["status"] in [s.value for s in JobStatus]
    newer = {**data["jobs"][0], "a_key_from_a_newer_worker": 1}
    assert Job.from_json(newer) == plan.jobs[0]


def stage_step(*args, **props):
    """A TriggerStage that reads ``props`` for its build's properties."""
    from redox_ci.master.pipeline import TriggerStage

    class Step(TriggerStage):
        def getProperty(self, name, default=None):
            return props.get(name, default)
    return Step(*args)


def test_a_stage_starts_its_jobs_and_reports_the_rest():
    plan = build_plan("F", EVAL, SETTINGS, ["x86_64-linux", "aarch64-linux"],
                      cached=lambda paths: {p for p in paths if p.endswith("-cookbook")})
    props = {"plan": plan.to_json(), "flake_ref": "git+file:///r?rev=" + "a" * 40}
    step = stage_step("host-tools", {"x86_64-linux": "x86_64-linux/host-tools"}, "redox/report", **props)
    assert [j.name for j in step.cached_jobs()] == ["x86_64-linux.cookbook"]
    started = {t["props_to_set"]["virtual_builder_name"]: t for t in step.scheduler_calls(step.stage_jobs())}
    assert set(started) == {"x86_64-linux.redoxfs", "aarch64-linux.cookbook", "aarch64-linux.redoxfs"}
    redoxfs = started["x86_64-linux.redoxfs"]
    assert redoxfs["sched_name"] == "x86_64-linux/host-tools"
    assert set(redoxfs["props_to_set"]) == {"job", "flake", "virtual_builder_name", "virtual_builder_tags",
                                            "plan_scheduler"}
    job = Job.from_json(redoxfs["props_to_set"]["job"])
    assert job.status == "build" and job.checks_forced is True and job.attr == "redoxfs"
    assert started["aarch64-linux.cookbook"]["sched_name"] == "redox/report"
    # A system no worker builds: the job is reported skipped with the reason.
    step = stage_step("host-tools", {}, "redox/report", **props)
    calls = step.scheduler_calls(step.stage_jobs())
    started = {t["props_to_set"]["virtual_builder_name"]: t["props_to_set"] for t in calls}
    assert started["x86_64-linux.redoxfs"]["job"]["status"] == "skipped"
    assert started["x86_64-linux.redoxfs"]["job"]["reason"].startswith("no worker builds x86_64-linux, natively or by")


def test_boot_jobs_follow_the_image_and_bootloader():
    from redox_ci.config import BootSettings
    from redox_ci.master.boot import boot_jobs

    evaluation = {"x86_64-linux": {"packages": {**EVAL["x86_64-linux"]["packages"], "diskImage": package("diskImage")}}}
    plan = build_plan("F", evaluation, SETTINGS, ["x86_64-linux"])
    jobs = {s.job.attr: s for s in boot_jobs(plan, BootSettings(image_attr="diskImage"))}
    assert set(jobs) == {"boot-qemu", "boot-cloud-hypervisor"}
    assert jobs["boot-qemu"].job.status == "skipped" and "no bootloader" in jobs["boot-qemu"].job.reason
    ch = jobs["boot-cloud-hypervisor"]
    assert ch.job.status == "build" and ch.route == "x86_64-linux/cloud-hypervisor"
    assert ch.extra["boot"]["image_paths"] == [f"/nix/store/{'o' * 32}-diskImage"] and "kvm" in ch.no_worker
    # Booted only if the image's job succeeded (TriggerStage, needing_unsuccessful).
    assert ch.job.after == ["x86_64-linux.diskImage"]


def test_a_job_build_carries_the_job_as_one_property():
    from buildbot.process.properties import Properties

    from redox_ci.master.base import job_of, job_properties

    job = build_plan("F", EVAL, SETTINGS, ["x86_64-linux"]).jobs[0]
    props = job_properties(job, "git+file:///r?rev=" + "a" * 40)
    assert set(props) == {"job", "flake", "virtual_builder_name", "virtual_builder_tags"}
    # Buildbot keeps properties as JSON: the job comes back whole.
    stored = Properties(**json.loads(json.dumps(props)))
    assert job_of(stored) == job and stored.getProperty("virtual_builder_name") == job.name


def test_a_skipped_hidden_step_is_left_out_before_it_starts():
    from types import SimpleNamespace

    from buildbot.process.results import SKIPPED

    from redox_ci.master.base import invisible_skip

    def step(do, hide):
        return SimpleNamespace(doStepIf=do, hideStepIf=hide)

    def hidden_when_skipped(results, s):
        return results == SKIPPED
    assert invisible_skip(step(lambda s: False, hidden_when_skipped))
    assert invisible_skip(step(lambda s: False, True))
    assert not invisible_skip(step(lambda s: True, hidden_when_skipped))  # it runs
    assert not invisible_skip(step(lambda s: False, False))  # skipped, but shown: Buildbot records it
    assert not invisible_skip(step(True, True))  # no condition at all


def test_a_step_is_logged_by_its_name_not_its_arguments():
    from redox_ci.master.pipeline import PlanStep

    step = PlanStep(["redox-ci"], ["plan"], name="plan", settings_text="x" * 10_000)
    assert str(step) == repr(step) == "PlanStep('plan')"


def _stage_job(attr: str, after: list[str] = (), status: JobStatus = JobStatus.BUILD):
    from redox_ci.master.pipeline import StageJob
    return StageJob.of(Job(attr, "x86_64-linux", "cross-system", f"/nix/store/{attr}.drv", False, status,
                           after=[f"x86_64-linux.{a}" for a in after]))


def test_a_stage_starts_its_jobs_in_waves_of_dependency_order():
    from redox_ci.master.pipeline import job_waves
    jobs = [_stage_job("sysroot", ["base", "relibc"]), _stage_job("relibc"), _stage_job("base", ["relibc"]),
            _stage_job("bootstrap", ["relibc"]), _stage_job("fstools", ["elsewhere"])]
    assert [[s.job.attr for s in w] for w in job_waves(jobs)] == [
        ["relibc", "fstools"], ["base", "bootstrap"], ["sysroot"]]
    assert job_waves([]) == []


def test_a_job_whose_dependency_did_not_succeed_is_reported_not_built():
    from redox_ci.master.pipeline import needing_unsuccessful
    base = _stage_job("base", ["relibc", "kernel"])
    skipped = needing_unsuccessful(base, {"x86_64-linux.relibc"}).job
    assert (skipped.status, skipped.reason) == (
        JobStatus.SKIPPED, "not built: it needs x86_64-linux.relibc, which did not succeed")
    assert needing_unsuccessful(base, {"x86_64-linux.fstools"}) == base
    failed_eval = _stage_job("base", ["relibc"], JobStatus.FAILED)
    assert needing_unsuccessful(failed_eval, {"x86_64-linux.relibc"}) == failed_eval


class _BuildOfBuildbot:
    """What BuilderInfoOnce uses of Buildbot's Build: its properties, and a getBuilderId
    that counts the times it found the builder and wrote its info."""

    VIRTUAL_BUILDERNAME_PROP = "virtual_builder_name"
    VIRTUAL_BUILDERDESCRIPTION_PROP = "virtual_builder_description"
    VIRTUAL_BUILDER_PROJECT_PROP = "virtual_builder_project"
    VIRTUAL_BUILDERTAGS_PROP = "virtual_builder_tags"
    written: list[str] = []

    def __init__(self, master, **props):
        from types import SimpleNamespace
        self.master, self.props, self._builderid = master, props, None
        self.builder = SimpleNamespace(config=SimpleNamespace(description=None, project=None, tags=["stage"]))

    def hasProperty(self, name):
        return name in self.props

    def getProperty(self, name, default=None):
        return self.props.get(name, default)

    def getBuilderId(self):
        from twisted.internet import defer
        self.written.append(self.props.get(self.VIRTUAL_BUILDERNAME_PROP, "the builder's own"))
        self._builderid = len(self.written)
        return defer.succeed(self._builderid)


def test_a_job_builder_is_found_and_its_info_written_once_per_master_and_info():
    from redox_ci.master.base import BuilderInfoOnce
    build = type("Build", (BuilderInfoOnce, _BuildOfBuildbot), {})
    master, other_master = object.__new__(type("M", (), {})), object.__new__(type("M", (), {}))
    _BuildOfBuildbot.written = []

    def builder_id(m, **props):
        return build(m, **props).getBuilderId().result

    base = {"virtual_builder_name": "x86_64-linux.base", "virtual_builder_tags": ["x86_64-linux", "cross-system"]}
    first = builder_id(master, **base)
    assert builder_id(master, **base) == first and _BuildOfBuildbot.written == ["x86_64-linux.base"]
    moved = {**base, "virtual_builder_tags": ["x86_64-linux", "infrastructure"]}  # another stage: written again
    assert builder_id(master, **moved) != first
    assert builder_id(other_master, **moved) and builder_id(master) and builder_id(master)
    assert _BuildOfBuildbot.written == ["x86_64-linux.base"] * 3 + ["the builder's own"] * 2
