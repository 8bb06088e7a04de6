"""A master killed mid-pipeline and started again (issue 11, item 2), on PostgreSQL, with
its buildbot-worker processes over TCP, Nix and the binary cache (moto's S3 over HTTP).

The master is SIGKILLed while a slow job builds and after another job finished and was
pushed to the cache. At the next start, Buildbot's housekeeping ends the dead
incarnation's builds with RETRY and queues their requests again; redox-ci's restart
clean-up then cancels the requests whose plan build is gone (the old plan build's summary
says why), and the plan runs once more: the finished job is cached and not built again,
the interrupted one is built once. Every job of the commit ends with exactly one final
result, and what was recorded before the crash is still there.
"""

from __future__ import annotations

import json

import pytest
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SUCCESS

from redox_ci.master.known import NAME as KNOWN_FAILURES
from redox_ci.master.known import STATE_NAME, KnownFailures, record_key
from redox_ci.master.restart import ORPHAN_REASON, interrupted_verdict, orphaned, plan_summary
from tests.master_support import BUILD_WAIT_SECONDS, cache_wiring, job_field, running_master, s3_server, slow_package
from tests.support import wait_for
from tests.test_postgres import DATABASE, cluster  # noqa: F401 (the module's PostgreSQL cluster fixture)

SLOW_JOB = "x86_64-linux.fstools"
TWICE_JOB = "x86_64-linux.kernel"
FAILING_JOB = "x86_64-linux.installer"
DONE_JOB = "x86_64-linux.cookbook"
# The slow job still builds when the master is killed (the other job, built and pushed
# meanwhile, takes a few seconds; a loaded machine gets a wide margin); after the restart it
# is built in full.
SLEEP_SECONDS = 60
NO_BOOTS = "[boot]\nenabled = false\n"
# Results that end a job; RETRY and CANCELLED are the interrupted pipeline's, not the job's.
FINAL = {SUCCESS, FAILURE}


@pytest.mark.unit
def test_master_killed_orphans_and_reruns():
    triggered = {"parent_buildid": 7, "rebuilt_buildid": None}
    assert orphaned(triggered, None)
    assert orphaned(triggered, {"complete": True})
    assert not orphaned(triggered, {"complete": False})
    assert not orphaned({"parent_buildid": 7, "rebuilt_buildid": 9}, {"complete": True})  # a Rebuild of a job
    assert interrupted_verdict([RETRY], 1) is None  # interrupted once: the pipeline runs again
    assert interrupted_verdict([RETRY, RETRY], 1) == \
        "interrupted 2 times (master restarts or lost workers), not run again"
    assert plan_summary(3, True) == \
        "interrupted by a master restart: 3 requests it triggered cancelled; the pipeline runs again"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    yield from s3_server(tmp_path_factory)


@pytest.fixture(scope="module")
def master(cluster, s3, tmp_path_factory):  # noqa: F811
    wiring = cache_wiring(s3.url, s3.bucket, tmp_path_factory.mktemp("keys"))
    yield from running_master(tmp_path_factory, "faults-master", slow_package(SLEEP_SECONDS, "fstools", "kernel"),
                              worker_kind="remote",
                              db_url=cluster.url(DATABASE), cache=wiring, systems=["x86_64-linux"],
                              max_builds=3, extra_toml=NO_BOOTS)


def builds_of(master, brid: int) -> list[dict]:
    return sorted(master.api("builds", buildrequestid=brid, property="*")["builds"], key=lambda b: b["buildid"])


def job_requests(master, plan_buildid: int) -> list[dict]:
    return [br for bs in master.api("buildsets", parent_buildid=plan_buildid)["buildsets"]
            for br in master.api("buildrequests", buildsetid=bs["bsid"])["buildrequests"]]


def by_job(master, plan_buildid: int) -> dict[str, list[dict]]:
    """Every build the plan build triggered, by job name."""
    out: dict[str, list[dict]] = {}
    for req in job_requests(master, plan_buildid):
        for b in builds_of(master, req["buildrequestid"]):
            out.setdefault(b["properties"]["virtual_builder_name"][0], []).append(b)
    return out


def crash_point(master, plan_buildid: int) -> dict | None:
    """The slow job building and the other one finished (and pushed): then the master dies."""
    try:
        jobs = by_job(master, plan_buildid)
    except KeyError:  # a build just created, its properties not yet set
        return None
    slow, done = jobs.get(SLOW_JOB, []), jobs.get(DONE_JOB, [])
    building = slow and not slow[-1]["complete"] and any(
        s["name"] == "build" and s["started_at"] for s in master.steps(slow[-1]["buildid"]))
    return jobs if building and done and done[-1]["complete"] else None


def crash_and_restart(master) -> None:
    master.kill_master()
    master.start_master()
    wait_for("the workers to reconnect", master._worker_connected, BUILD_WAIT_SECONDS)


@pytest.mark.e2e
def test_master_killed_mid_pipeline_runs_it_once_more(master):
    plan_brid = master.forced_request(master.force(attrs="fstools cookbook", systems=["x86_64-linux"],
                                                   reason="the master dies"))
    old_plan = master.first_build(plan_brid)
    before = wait_for("the crash point", lambda: crash_point(master, old_plan["buildid"]), BUILD_WAIT_SECONDS)
    assert before[DONE_JOB][-1]["results"] == SUCCESS

    crash_and_restart(master)

    # The plan request runs once more, to its end.
    def second_plan():
        builds = master.builds_of_request(plan_brid)
        return builds if len(builds) == 2 and builds[1]["complete"] else None
    old, new = wait_for("the plan's second build to end", second_plan, BUILD_WAIT_SECONDS)
    assert old["buildid"] == old_plan["buildid"] and old["results"] == RETRY
    assert new["results"] == SUCCESS, new["state_string"]

    # The old plan's requests are all complete; those still open at the crash were cancelled.
    old_requests = job_requests(master, old["buildid"])
    assert all(req["complete"] for req in old_requests), old_requests
    slow_request = before[SLOW_JOB][-1]["buildrequestid"]
    assert [req["results"] for req in old_requests if req["buildrequestid"] == slow_request] == [CANCELLED]
    assert old["state_string"] == plan_summary(1, True), old["state_string"]
    assert ORPHAN_REASON in master.setup.master_dir.joinpath("twistd.log").read_text()

    # Nothing recorded before the crash is lost: the finished job's build is as it was.
    done = master.api(f"builds/{before[DONE_JOB][-1]['buildid']}")["builds"][0]
    assert (done["complete"], done["results"]) == (True, SUCCESS)

    # Every job of the commit has exactly one final result: the finished one is cached and
    # not built again, the interrupted one is built once (after its RETRY at the crash).
    old_jobs, new_jobs = by_job(master, old["buildid"]), by_job(master, new["buildid"])
    for name in (SLOW_JOB, DONE_JOB):
        builds = old_jobs.get(name, []) + new_jobs.get(name, [])
        finals = [b for b in builds if b["results"] in FINAL]
        assert len(finals) == 1, (name, [(b["buildid"], b["results"], b["state_string"]) for b in builds])
        assert finals[0]["results"] == SUCCESS
        assert all(b["complete"] for b in builds)
    assert DONE_JOB not in new_jobs  # cached
    assert [b["results"] for b in old_jobs[SLOW_JOB]] == [RETRY]


def job_building(master, plan_buildid: int, name: str) -> dict | None:
    try:
        builds = by_job(master, plan_buildid).get(name, [])
    except KeyError:  # a build just created, its properties not yet set
        return None
    if builds and not builds[-1]["complete"] and any(
            s["name"] == "build" and s["started_at"] for s in master.steps(builds[-1]["buildid"])):
        return builds[-1]
    return None


@pytest.mark.e2e
def test_master_killed_twice_does_not_run_the_pipeline_again(master):
    brid = master.forced_request(master.force(attrs="kernel", systems=["x86_64-linux"], reason="dies twice"))
    first = master.first_build(brid)
    wait_for(f"{TWICE_JOB} building", lambda: job_building(master, first["buildid"], TWICE_JOB), BUILD_WAIT_SECONDS)
    crash_and_restart(master)
    second = wait_for("the plan's second build", lambda: (master.builds_of_request(brid)[1:] or [None])[0],
                      BUILD_WAIT_SECONDS)
    wait_for(f"{TWICE_JOB} building again", lambda: job_building(master, second["buildid"], TWICE_JOB),
             BUILD_WAIT_SECONDS)
    crash_and_restart(master)

    def request_done():
        req = master.api(f"buildrequests/{brid}")["buildrequests"][0]
        return req if req["complete"] else None
    req = wait_for("the plan request to end", request_done, BUILD_WAIT_SECONDS)
    assert req["results"] == CANCELLED
    builds = master.builds_of_request(brid)
    assert [b["results"] for b in builds] == [RETRY, RETRY], [b["state_string"] for b in builds]
    assert builds[0]["state_string"] == plan_summary(1, True)
    assert builds[1]["state_string"] == plan_summary(1, False)
    assert "interrupted 2 times (master restarts or lost workers), not run again" in \
        master.setup.master_dir.joinpath("twistd.log").read_text()
    # Nothing is left running or queued of either run.
    for b in builds:
        requests = job_requests(master, b["buildid"])
        assert requests and all(r["complete"] for r in requests), requests
        kernel = by_job(master, b["buildid"])[TWICE_JOB]
        assert [k["results"] for k in kernel] == [RETRY]


def stored_records(cluster) -> dict:  # noqa: F811
    """The known-failure records as the master keeps them in PostgreSQL."""
    rows = cluster.query(
        "SELECT s.value_json FROM object_state s JOIN objects o ON o.id = s.objectid "
        "WHERE o.class_name = %s AND o.name = %s AND s.name = %s",
        f"{KnownFailures.__module__}.{KnownFailures.__name__}", KNOWN_FAILURES, STATE_NAME)
    return json.loads(rows[0][0]) if rows else {}


@pytest.mark.e2e
def test_master_killed_keeps_the_known_failure_records(master, cluster):  # noqa: F811
    plan = master.forced_build(master.force(attrs="installer", systems=["x86_64-linux"], reason="a known failure"))
    job = master.jobs(plan["buildid"])[FAILING_JOB]
    assert job["results"] == FAILURE
    key = record_key(job_field(job, "drv"))
    assert stored_records(cluster)[key]["buildid"] == job["buildid"]
    master.kill_master()
    master.start_master()
    assert stored_records(cluster)[key]["buildid"] == job["buildid"]
