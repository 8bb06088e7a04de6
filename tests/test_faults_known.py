"""Known failures (issue 11, item 4), with a real master, its worker processes and Nix.

The fixture's x86_64 installer fails on purpose (its check phase hides a failing cargo
test, which redox-ci finds). Forced once, it fails and its derivation is recorded; a
later commit (the derivation unchanged) shows "failed before in <link>" for it without
building it, and counts it as failed; a force naming it, or a Rebuild of its job, builds
it again; a record older than ``[jobs] known_failure_days`` no longer stops a build.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from buildbot.process.results import FAILURE, SUCCESS

from redox_ci.fixture import commit_all
from redox_ci.master.known import (DAY_SECONDS, NAME, STATE_NAME, KnownFailures, failed_before, forces_job,
                                   live, outcome_change, pruned, record_key)
from tests.master_support import BUILD_WAIT_SECONDS, job_field, running_master
from tests.support import wait_for

INSTALLER = "x86_64-linux.installer"
COOKBOOK = "x86_64-linux.cookbook"
DRV = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-installer.drv"
# No VM boots: the jobs are what this file is about.
NO_BOOTS = "[boot]\nenabled = false\n"


# --- the decisions ----------------------------------------------------------------------

@pytest.mark.unit
def test_known_failure_record_is_keyed_by_the_derivation_hash():
    assert record_key(DRV) == "0123456789abcdfghijklmnpqrsvwxyz"
    assert record_key("") is None and record_key(None) is None
    assert record_key("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-installer") is None  # an output, not a .drv
    assert record_key("/nix/store/eeee456789abcdfghijklmnpqrsvwxyz-x.drv") is None  # 'e' is not Nix base-32


@pytest.mark.unit
def test_known_failure_records_only_the_build_verbs_failure():
    assert outcome_change("failed") == "record"
    assert outcome_change("success") == "clear"
    # not-built (no disk), or no answer at all (cancelled, worker lost, verb crashed): nothing changes
    assert outcome_change("not-built") is None
    assert outcome_change(None) is None


@pytest.mark.unit
def test_known_failure_expires():
    record = {"url": "http://ci/#/builders/3/builds/1", "at": 1000.0}
    assert live(record, 1000.0 + 7 * DAY_SECONDS - 1, 7)
    assert not live(record, 1000.0 + 7 * DAY_SECONDS, 7)
    assert not live(record, 1000.0, 0)  # 0 days: every later commit builds it
    assert not live(None, 1000.0, 7)
    assert failed_before(record) == "failed before in http://ci/#/builders/3/builds/1"
    assert pruned({"a": record, "b": {**record, "at": 5000.0}}, 1000.0 + 7 * DAY_SECONDS, 7) == \
        {"b": {**record, "at": 5000.0}}


@pytest.mark.unit
def test_known_failure_force_must_name_the_job():
    names = {"installer", "installer-build"}
    assert forces_job("force", "cookbook installer", names)
    assert forces_job("force", "installer-build", names)
    assert not forces_job("force", "", names)  # a force of everything keeps the records
    assert not forces_job("force", "cookbook", names)
    assert not forces_job("commits", "installer", names)


# --- through a master -------------------------------------------------------------------

@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "faults-known", worker_kind="remote", poll_interval=5,
                              systems=["x86_64-linux"], extra_toml=NO_BOOTS)


def finished(master, buildid: int) -> dict | None:
    b = master.api(f"builds/{buildid}")["builds"][0]
    return b if b["complete"] else None


def plan_of(master, rev: str) -> dict:
    """The finished plan build of a commit."""
    def find():
        for b in master.plan_builds():
            req = master.api(f"buildrequests/{b['buildrequestid']}")["buildrequests"][0]
            bs = master.api(f"buildsets/{req['buildsetid']}")["buildsets"][0]
            if bs["sourcestamps"][0]["revision"] == rev:
                return b
        return None
    plan = wait_for(f"the plan of {rev}", find, BUILD_WAIT_SECONDS)
    return wait_for("the plan to end", lambda: finished(master, plan["buildid"]), BUILD_WAIT_SECONDS)


def step_names(master, build: dict) -> list[str]:
    return [s["name"] for s in master.steps(build["buildid"])]


def forced_installer(master) -> dict:
    plan = master.forced_build(master.force(attrs="installer", systems=["x86_64-linux"], reason="known failures"))
    return master.jobs(plan["buildid"])[INSTALLER]


def url_of(master, build: dict) -> str:
    return f"{master.url}#/builders/{build['builderid']}/builds/{build['number']}"


@pytest.fixture(scope="module")
def first_failure(master):
    """The installer forced and built: it fails, and its derivation is recorded."""
    job = forced_installer(master)
    assert job["results"] == FAILURE, job["state_string"]
    assert "build" in step_names(master, job)
    return job


@pytest.fixture(scope="module")
def later_commit(master, first_failure):
    """A commit that leaves the installer's derivation as it was: its whole pipeline."""
    rev = commit_all(master.setup.repo, "a later commit, the installer unchanged")
    plan = plan_of(master, rev)
    return plan, master.jobs(plan["buildid"])


@pytest.mark.e2e
def test_known_failure_is_not_built_for_a_later_commit(master, first_failure, later_commit):
    plan, jobs = later_commit
    job = jobs[INSTALLER]
    assert job_field(job, "drv") == job_field(first_failure, "drv")
    assert job["results"] == FAILURE
    assert f"failed before in {url_of(master, first_failure)}" in job["state_string"], job["state_string"]
    # No Nix: the build step never ran, and the verb left no answer.
    names = step_names(master, job)
    assert "known failure" in names and "build" not in names, names
    assert "build_result" not in job["properties"]
    # It counts as failed; the rest of the commit is built.
    assert plan["results"] == FAILURE
    assert "failure" in master.step(plan["buildid"], "stage host-tools")["state_string"]
    assert jobs[COOKBOOK]["results"] == SUCCESS


@pytest.mark.e2e
def test_known_failure_force_clears_the_record_and_builds(master, later_commit):
    job = forced_installer(master)
    assert job["results"] == FAILURE
    assert "failed before" not in job["state_string"], job["state_string"]
    assert "build" in step_names(master, job)
    assert master.step(job["buildid"], "known failure")["state_string"] == "forced: the failure record was cleared"


def rebuild(master, build: dict) -> dict:
    r = master.login().post(master.url + f"api/v2/builds/{build['buildid']}",
                            json={"jsonrpc": "2.0", "method": "rebuild", "id": 1, "params": {}}, timeout=30)
    assert r.ok and "result" in r.json(), r.text
    brid = int(list(r.json()["result"][1].values())[0])
    return master.build_for_request(brid)


@pytest.mark.e2e
def test_known_failure_rebuild_clears_the_record_and_builds(master, later_commit):
    _, jobs = later_commit
    again = rebuild(master, jobs[INSTALLER])
    assert again["results"] == FAILURE
    assert "build" in step_names(master, again), again["state_string"]
    assert master.step(again["buildid"], "known failure")["state_string"] == "Rebuild: the failure record was cleared"


def age_record(master, drv: str, days: float) -> None:
    """Make the derivation's record ``days`` old in the master's SQLite database, the master
    stopped meanwhile (it keeps the records in memory too, read at its start)."""
    master.stop()
    db = sqlite3.connect(master.setup.master_dir / "state.sqlite")
    try:
        (objectid,), = db.execute("SELECT id FROM objects WHERE class_name = ? AND name = ?",
                                  (f"{KnownFailures.__module__}.{KnownFailures.__name__}", NAME)).fetchall()
        (value,), = db.execute("SELECT value_json FROM object_state WHERE objectid = ? AND name = ?",
                               (objectid, STATE_NAME)).fetchall()
        records = json.loads(value)
        records[record_key(drv)]["at"] = time.time() - days * DAY_SECONDS
        db.execute("UPDATE object_state SET value_json = ? WHERE objectid = ? AND name = ?",
                   (json.dumps(records), objectid, STATE_NAME))
        db.commit()
    finally:
        db.close()
    master.start()


@pytest.mark.e2e
def test_known_failure_record_expires(master, later_commit):
    _, jobs = later_commit
    # Default known_failure_days = 7: a record 8 days old no longer stops the build.
    age_record(master, job_field(jobs[INSTALLER], "drv"), 8)
    rev = commit_all(master.setup.repo, "a commit after the record expired")
    job = master.jobs(plan_of(master, rev)["buildid"])[INSTALLER]
    assert job["results"] == FAILURE
    assert "failed before" not in job["state_string"], job["state_string"]
    assert "build" in step_names(master, job)
    assert "known failure" not in step_names(master, job)  # the expired record was dropped at the start
