"""Lost workers (issue 11, item 1), with a real master, its buildbot-worker processes over
TCP and Nix: a job whose worker dies while it builds runs again at most ``[jobs] retries``
times (2 here, the default), then ends FAILURE "worker lost 3 times"; the rest of the
commit completes. Buildbot alone would queue it again without end (its issue 5354).

The fault is real: while the job's build step runs, the test SIGKILLs the buildbot-worker
process running it (and the build's processes below it), as a host that dies would, then
starts that worker again, which reconnects by itself.
"""

from __future__ import annotations

import uuid

import pytest
from buildbot.process.results import FAILURE, RETRY, SUCCESS

from redox_ci.master.retries import lost_times, lost_verdict
from tests.master_support import BUILD_WAIT_SECONDS, running_master
from tests.support import wait_for

KILLED_JOB = "x86_64-linux.fstools"
OTHER_JOB = "x86_64-linux.cookbook"
RETRIES = 2
# The killed job builds this long, so that its build step is still running when the test
# kills the worker; the worker's death stops it (the Nix client goes with the worker).
SLEEP_SECONDS = 300
# (A new derivation at every run, with a nonce: Nix's store outlives a run.)
NO_BOOTS = "[boot]\nenabled = false\n"


@pytest.mark.unit
def test_worker_lost_verdict_caps_the_retries():
    assert lost_times([]) == 1
    assert lost_verdict([], 2) is None
    assert lost_verdict([RETRY], 2) is None
    assert lost_verdict([RETRY, RETRY], 2) == "worker lost 3 times"
    # Only lost workers count: a cancelled or failed build of the request is not one.
    assert lost_verdict([RETRY, FAILURE], 2) is None
    assert lost_verdict([], 0) == "worker lost 1 time"


def with_slow_package(text: str) -> str:
    old = 'fstools = simple "fstools" [ ];'
    assert old in text
    return text.replace(old, f'fstools = mkPkg {{ pname = "fstools"; buildPhase = "sleep {SLEEP_SECONDS}; echo {uuid.uuid4().hex}"; }};')


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "faults-workers", with_slow_package, worker_kind="remote",
                              systems=["x86_64-linux"], max_builds=3, extra_toml=NO_BOOTS)


def builds_of(master, plan: dict, name: str) -> list[dict]:
    """Every build of a job of the plan (a retried request has several), oldest first."""
    try:
        builds = [b for b in master.children(plan["buildid"]) if b["properties"]["virtual_builder_name"][0] == name]
    except KeyError:  # a build just created, its properties not yet set
        return []
    return sorted(builds, key=lambda b: b["buildid"])


def building(master, build: dict) -> bool:
    """Whether the build's "build" step (redox-ci build, Nix) is running."""
    return any(s["name"] == "build" and s["started_at"] and not s["complete"] for s in master.steps(build["buildid"]))


def running_build(master, plan: dict, name: str) -> dict | None:
    live = [b for b in builds_of(master, plan, name) if not b["complete"]]
    return live[-1] if live and building(master, live[-1]) else None


def job_done(master, plan: dict, name: str) -> dict | None:
    builds = builds_of(master, plan, name)
    return builds[-1] if builds and builds[-1]["complete"] and builds[-1]["results"] != RETRY else None


@pytest.mark.e2e
def test_worker_lost_three_times_fails_the_job_and_the_commit_completes(master):
    r = master.force(attrs="fstools cookbook", systems=["x86_64-linux"], reason="a job that kills its worker")
    assert r.ok and "result" in r.json(), r.text
    brid = int(list(r.json()["result"][1].values())[0])
    plan = wait_for("the plan build", lambda: (master.api("builds", buildrequestid=brid)["builds"] or [None])[0],
                    BUILD_WAIT_SECONDS)
    for attempt in range(1, RETRIES + 2):
        build = wait_for(f"{KILLED_JOB} building (attempt {attempt})",
                         lambda: running_build(master, plan, KILLED_JOB), BUILD_WAIT_SECONDS)
        worker = master.api(f"workers/{build['workerid']}")["workers"][0]["name"]
        master.kill_worker(worker)
        master.start_worker(worker)
    last = wait_for(f"{KILLED_JOB} to end", lambda: job_done(master, plan, KILLED_JOB), BUILD_WAIT_SECONDS)
    builds = builds_of(master, plan, KILLED_JOB)
    assert [b["results"] for b in builds] == [RETRY] * RETRIES + [FAILURE], [b["state_string"] for b in builds]
    assert len({b["buildrequestid"] for b in builds}) == 1
    assert f"worker lost {RETRIES + 1} times" in last["state_string"], last["state_string"]
    # The rest of the commit completes, and the failure counts.
    plan = master.build_for_request(brid)
    assert plan["results"] == FAILURE, plan["state_string"]
    other = wait_for(f"{OTHER_JOB} to end", lambda: job_done(master, plan, OTHER_JOB), BUILD_WAIT_SECONDS)
    assert other["results"] == SUCCESS, other["state_string"]
