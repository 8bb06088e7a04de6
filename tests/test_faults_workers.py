"""Lost workers (issue 11, item 1), with a real master, its buildbot-worker processes over
TCP and Nix: a job whose worker dies while it builds runs again at most ``[jobs] retries``
times (2 here, the default), then ends FAILURE "worker lost 3 times"; the rest of the
commit completes. Buildbot alone would queue it again without end (its issue 5354).

The fault is real: while the job's build step runs, the test SIGKILLs the buildbot-worker
process running it (and the build's processes below it), as a host that dies would, then
starts that worker again, which reconnects by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SUCCESS, WARNINGS

from redox_ci.config import Settings
from redox_ci.errors import ConfigError
from redox_ci.master.retries import lost_times, lost_verdict
from redox_ci.master.workers import prefer_native
from redox_ci.settings_file import validate
from tests.master_support import BUILD_WAIT_SECONDS, cache_wiring, running_master, s3_server, slow_package
from tests.support import wait_for

KILLED_JOB = "x86_64-linux.fstools"
OTHER_JOB = "x86_64-linux.cookbook"
FINISHED_JOB = "x86_64-linux.redoxfs"
RETRIES = 2
# The killed job builds this long, so that its build step is still running when the test
# kills the worker; the worker's death stops it (the Nix client goes with the worker).
SLEEP_SECONDS = 300
# (A new derivation at every run, with a nonce: Nix's store outlives a run.)
NO_BOOTS = "[boot]\nenabled = false\n"
SLOTS = 4


@pytest.mark.unit
def test_worker_lost_verdict_caps_the_retries():
    assert lost_times([]) == 1
    assert lost_verdict([], 2) is None
    assert lost_verdict([RETRY], 2) is None
    assert lost_verdict([RETRY, RETRY], 2) == "worker lost 3 times"
    # Only lost workers count: a cancelled or failed build of the request is not one.
    assert lost_verdict([RETRY, FAILURE], 2) is None
    assert lost_verdict([], 0) == "worker lost 1 time"


@dataclass
class _Busy:
    busy: bool

    def isBusy(self) -> bool:  # noqa: N802 (Buildbot's name)
        return self.busy


@dataclass
class _Worker:
    workername: str
    workerforbuilders: dict


@dataclass
class _Slot:
    worker: _Worker


@pytest.mark.unit
def test_worker_lost_takes_only_its_job_down_a_job_takes_an_idle_slot_first():
    def slot(name: str, busy: bool) -> _Slot:
        return _Slot(_Worker(name, {"redox/plan": _Busy(busy)}))
    plan, idle = slot("w-1", True), slot("w-2", False)
    for pick in (prefer_native(["w-1", "w-2"]), prefer_native(None)):
        assert all(pick(None, [plan, idle], None) is idle for _ in range(20))
        assert pick(None, [plan], None) is plan  # no idle slot: share rather than wait


@pytest.mark.unit
def test_worker_lost_retries_setting_is_checked():
    assert validate(Settings, {"flake": {"repo": "/r"}}, "s.toml").jobs.retries == RETRIES
    with pytest.raises(ConfigError, match=r"s\.toml: jobs\.retries: .*greater than or equal to 0"):
        validate(Settings, {"flake": {"repo": "/r"}, "jobs": {"retries": -1}}, "s.toml")
    with pytest.raises(ConfigError, match=r"jobs\.known_failure_days"):
        validate(Settings, {"flake": {"repo": "/r"}, "jobs": {"known_failure_days": "7"}}, "s.toml")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    yield from s3_server(tmp_path_factory)


@pytest.fixture(scope="module")
def master(tmp_path_factory, s3):
    # The cache answers for the jobs a lost plan had finished. Four slots: the plan's, two
    # jobs', and one idle while a killed slot reconnects, so that no retry has to share the
    # plan's slot (jobs take an idle slot first; sharing it, the plan would be lost too).
    yield from running_master(tmp_path_factory, "faults-workers", slow_package(SLEEP_SECONDS), worker_kind="remote",
                              systems=["x86_64-linux"], max_builds=SLOTS, extra_toml=NO_BOOTS,
                              cache=cache_wiring(s3.url, s3.bucket, tmp_path_factory.mktemp("keys")))


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


def running_build(master, plan: dict, name: str, killed: frozenset[int] = frozenset()) -> dict | None:
    """The job's build that is building now; not one in ``killed``, which the master may still
    show as running for a moment after its worker died."""
    live = [b for b in builds_of(master, plan, name) if not b["complete"] and b["buildid"] not in killed]
    return live[-1] if live and building(master, live[-1]) else None


def job_done(master, plan: dict, name: str) -> dict | None:
    builds = builds_of(master, plan, name)
    return builds[-1] if builds and builds[-1]["complete"] and builds[-1]["results"] != RETRY else None


@pytest.mark.e2e
def test_worker_lost_three_times_fails_the_job_and_the_commit_completes(master):
    brid = master.forced_request(master.force(attrs="fstools cookbook", systems=["x86_64-linux"],
                                              reason="a job that kills its worker"))
    plan = master.first_build(brid)
    killed: set[int] = set()
    for attempt in range(1, RETRIES + 2):
        build = wait_for(f"{KILLED_JOB} building (attempt {attempt})",
                         lambda: running_build(master, plan, KILLED_JOB, frozenset(killed)), BUILD_WAIT_SECONDS)
        worker = master.api(f"workers/{build['workerid']}")["workers"][0]["name"]
        master.kill_worker(worker)
        killed.add(build["buildid"])
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


def kill_plan_worker(master, plan: dict) -> None:
    """SIGKILL the worker slot the plan build runs on (jobs took idle slots), and start it again."""
    worker = master.api(f"workers/{plan['workerid']}")["workers"][0]["name"]
    master.kill_worker(worker)
    master.start_worker(worker)


@pytest.mark.e2e
def test_worker_lost_under_the_plan_reruns_the_plan_once(master):
    brid = master.forced_request(master.force(attrs="fstools redoxfs", systems=["x86_64-linux"],
                                              reason="the plan's worker dies"))
    first = master.first_build(brid)
    wait_for(f"{FINISHED_JOB} to end", lambda: job_done(master, first, FINISHED_JOB), BUILD_WAIT_SECONDS)
    wait_for(f"{KILLED_JOB} building", lambda: running_build(master, first, KILLED_JOB), BUILD_WAIT_SECONDS)
    kill_plan_worker(master, first)

    # The plan runs again, once: the finished job is cached, not built again.
    second = wait_for("the plan's second build", lambda: (master.builds_of_request(brid)[1:] or [None])[0],
                      BUILD_WAIT_SECONDS)
    wait_for(f"{KILLED_JOB} building again", lambda: running_build(master, second, KILLED_JOB), BUILD_WAIT_SECONDS)
    assert builds_of(master, second, FINISHED_JOB) == []
    assert FINISHED_JOB in master.step_logs(second["buildid"], "stage host-tools")["cached"]
    kill_plan_worker(master, second)

    plan = wait_for("the plan request to end", lambda: master.api(f"buildrequests/{brid}")["buildrequests"][0]
                    if master.api(f"buildrequests/{brid}")["buildrequests"][0]["complete"] else None,
                    BUILD_WAIT_SECONDS)
    builds = master.builds_of_request(brid)
    assert [b["results"] for b in builds] == [RETRY, FAILURE], [b["state_string"] for b in builds]
    assert plan["results"] == FAILURE
    assert "worker lost 2 times" in builds[1]["state_string"], builds[1]["state_string"]
    # What each plan build had started ended with it (Buildbot's Trigger cancels it).
    finished = [b["results"] for b in builds_of(master, builds[0], FINISHED_JOB)]
    assert finished in ([SUCCESS], [WARNINGS]), finished
    for b in builds:
        killed = builds_of(master, b, KILLED_JOB)
        for k in killed:
            wait_for(f"{KILLED_JOB} build {k['buildid']} to end",
                     lambda: master.api(f"builds/{k['buildid']}")["builds"][0]["complete"], BUILD_WAIT_SECONDS)
        assert [master.api(f"builds/{k['buildid']}")["builds"][0]["results"] for k in killed] == [CANCELLED]
