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
    started = {t["props_to_set"]["virtual_builder_name"]: t for t in step.getSchedulersAndProperties()}
    assert set(started) == {"x86_64-linux.redoxfs", "aarch64-linux.cookbook", "aarch64-linux.redoxfs"}
    redoxfs = started["x86_64-linux.redoxfs"]
    assert redoxfs["sched_name"] == "x86_64-linux/host-tools"
    assert redoxfs["props_to_set"]["job_status"] == "build" and redoxfs["props_to_set"]["checks_forced"] is True
    assert started["aarch64-linux.cookbook"]["sched_name"] == "redox/report"
    # A system no worker builds: the job is reported skipped with the reason.
    step = stage_step("host-tools", {}, "redox/report", **props)
    started = {t["props_to_set"]["virtual_builder_name"]: t["props_to_set"] for t in step.getSchedulersAndProperties()}
    assert started["x86_64-linux.redoxfs"]["job_status"] == "skipped"
    assert started["x86_64-linux.redoxfs"]["job_reason"].startswith("no worker builds x86_64-linux, natively or by")


def test_boot_jobs_follow_the_image_and_bootloader():
    from redox_ci.master.boot import boot_jobs

    evaluation = {"x86_64-linux": {"packages": {**EVAL["x86_64-linux"]["packages"], "diskImage": package("diskImage")}}}
    plan = build_plan("F", evaluation, SETTINGS, ["x86_64-linux"])
    jobs = {s.job.attr: s for s in boot_jobs(plan, "diskImage", "bootloader")}
    assert set(jobs) == {"boot-qemu", "boot-cloud-hypervisor"}
    assert jobs["boot-qemu"].job.status == "skipped" and "no bootloader" in jobs["boot-qemu"].job.reason
    ch = jobs["boot-cloud-hypervisor"]
    assert ch.job.status == "build" and ch.route == "x86_64-linux/cloud-hypervisor"
    assert ch.extra["image_paths"] == [f"/nix/store/{'o' * 32}-diskImage"] and "kvm" in ch.no_worker
