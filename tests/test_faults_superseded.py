"""Superseded commits (issue 11, item 3), with a real master, its worker processes and Nix:
a second commit on main while the first commit's pipeline still builds cancels that
pipeline (the plan build and the job builds it triggered end CANCELLED, the plan with
"superseded by <rev>"), and the second pipeline completes; a forced build is not cancelled
by a later commit. One package of the fixture sleeps so that a pipeline is still running
when the next commit comes."""

from __future__ import annotations

import re
import uuid

import pytest
from buildbot.process.results import CANCELLED, SUCCESS

from redox_ci.fixture import commit_all
from tests.master_support import BUILD_WAIT_SECONDS, running_master
from tests.support import wait_for

pytestmark = pytest.mark.e2e

SLOW_JOB = "x86_64-linux.fstools"
# Long enough that the next commit is polled (every 5 s here) while this job still builds.
SLEEP_SECONDS = 40
# Changed at every commit, so that the slow derivation is new (Nix's store outlives a test
# run, and a package built before would be "already built" at once).
NONCE = "echo nonce-0"


def with_slow_package(text: str) -> str:
    old = 'fstools = simple "fstools" [ ];'
    assert old in text
    return text.replace(old, f'fstools = mkPkg {{ pname = "fstools"; buildPhase = "sleep {SLEEP_SECONDS}; {NONCE}"; }};')


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "superseded", with_slow_package, worker_kind="remote",
                              poll_interval=5)


def revision_of(master, build: dict) -> str | None:
    req = master.api(f"buildrequests/{build['buildrequestid']}")["buildrequests"][0]
    bs = master.api(f"buildsets/{req['buildsetid']}")["buildsets"][0]
    return bs["sourcestamps"][0]["revision"]


def plan_for(master, rev: str | None = None, forced: bool = False) -> dict | None:
    for b in master.plan_builds():
        if forced and b["buildrequestid"] == master.forced_brid:
            return b
        if not forced and rev and revision_of(master, b) == rev:
            return b
    return None


def slow_job_running(master, plan: dict) -> bool:
    try:
        job = master.jobs(plan["buildid"]).get(SLOW_JOB)
    except KeyError:  # a job build just created, its properties not yet set
        return False
    return bool(job) and not job["complete"]


def finished(master, buildid: int) -> dict | None:
    b = master.api(f"builds/{buildid}")["builds"][0]
    return b if b["complete"] else None


def commit(master, message: str) -> str:
    """A commit whose slow package is a new derivation."""
    flake = master.setup.repo / "flake.nix"
    text = flake.read_text()
    assert text.count("echo nonce-") == 1
    flake.write_text(re.sub(r"echo nonce-[0-9a-f]+", f"echo nonce-{uuid.uuid4().hex}", text))
    return commit_all(master.setup.repo, message)


def running_plan(master, **which) -> dict:
    plan = wait_for("the plan build", lambda: plan_for(master, **which), BUILD_WAIT_SECONDS)
    wait_for(f"{SLOW_JOB} to be building", lambda: slow_job_running(master, plan), BUILD_WAIT_SECONDS)
    return plan


def test_superseded_commit_cancels_the_older_pipeline(master):
    first = commit(master, "first")
    old = running_plan(master, rev=first)
    second = commit(master, "second")
    old = wait_for("the first plan to end", lambda: finished(master, old["buildid"]), BUILD_WAIT_SECONDS)
    assert old["results"] == CANCELLED, old
    assert f"superseded by {second}" in old["state_string"], old["state_string"]
    jobs = master.jobs(old["buildid"])
    assert jobs[SLOW_JOB]["results"] == CANCELLED
    assert "parent build was interrupted" in jobs[SLOW_JOB]["state_string"]  # Buildbot's reason
    # Every job ends: those that finished before the cancel keep their result (the fixture's
    # installer fails on purpose).
    for name, job in jobs.items():
        wait_for(f"job {name} to end", lambda: finished(master, job["buildid"]), BUILD_WAIT_SECONDS)
    new = wait_for("the second plan", lambda: plan_for(master, rev=second), BUILD_WAIT_SECONDS)
    completes(master, new)


def completes(master, plan: dict) -> None:
    """The plan runs to its end, not cancelled, and its slow job builds."""
    plan = wait_for("the plan to end", lambda: finished(master, plan["buildid"]), BUILD_WAIT_SECONDS)
    assert plan["results"] != CANCELLED and "superseded" not in plan["state_string"], plan["state_string"]
    slow = master.jobs(plan["buildid"])[SLOW_JOB]
    assert slow["results"] == SUCCESS, slow["state_string"]


def test_superseded_never_cancels_a_forced_build(master):
    commit(master, "the forced build's tip, a new slow derivation")
    r = master.force(systems=["x86_64-linux"], reason="forced, not to be superseded")
    assert r.ok and "result" in r.json(), r.text
    master.forced_brid = int(list(r.json()["result"][1].values())[0])
    forced = running_plan(master, forced=True)
    later = commit(master, "a commit after the force")
    later_plan = wait_for("the later commit's plan", lambda: plan_for(master, rev=later), BUILD_WAIT_SECONDS)
    completes(master, forced)
    completes(master, later_plan)
