"""Jobs in dependency order (issue 13), with a real master, its worker processes and Nix.

In the fixture, relibc -> base -> sysroot are jobs of one stage, and ion, of the next
stage, needs sysroot. relibc is made slow: started together, base's build would build
relibc too (or wait on Nix's lock for it). The stage starts base once relibc's job has
ended, and sysroot after base. When relibc fails, base and sysroot are reported as not
built, naming it, and so is ion in the next stage; none of them reaches a worker.
"""

from __future__ import annotations

import re
import uuid

import pytest
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS

from redox_ci.fixture import commit_all
from tests.master_support import job_field, running_master, slow_package

RELIBC, BASE, SYSROOT, ION = "x86_64-linux.relibc", "x86_64-linux.base", "x86_64-linux.sysroot", "x86_64-linux.ion"
# Long enough that a job started beside relibc's would start before it ended (whole seconds).
RELIBC_SECONDS = 3
# No poller builds: only the forced ones run.
POLL_NEVER_SECONDS = 10**7


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "dependency-order", edit_flake=slow_package(RELIBC_SECONDS, "relibc"),
                              worker_kind="remote", systems=["x86_64-linux"], max_builds=2,
                              poll_interval=POLL_NEVER_SECONDS)


def forced_jobs(master, revision: str = "", attrs: str = "relibc base sysroot ion") -> dict[str, dict]:
    plan = master.forced_build(master.force(attrs=attrs, systems=["x86_64-linux"],
                                            revision=revision, reason="dependency order"))
    return master.jobs(plan["buildid"])


@pytest.mark.e2e
def test_a_job_starts_after_the_jobs_it_needs_have_ended(master):
    jobs = forced_jobs(master)
    assert {name: b["results"] for name, b in jobs.items()} == {RELIBC: SUCCESS, BASE: SUCCESS, SYSROOT: SUCCESS,
                                                                ION: SUCCESS}
    assert job_field(jobs[BASE], "after") == [RELIBC]
    assert job_field(jobs[SYSROOT], "after") == [BASE, RELIBC]
    relibc, base, sysroot = jobs[RELIBC], jobs[BASE], jobs[SYSROOT]
    assert relibc["complete_at"] - relibc["started_at"] >= RELIBC_SECONDS
    assert base["started_at"] >= relibc["complete_at"], (relibc, base)
    assert sysroot["started_at"] >= base["complete_at"], (base, sysroot)
    # The build step's log has the command and Nix's output, not the worker's environment.
    stdio = master.step_logs(base["buildid"], "build")["stdio"]
    assert "redox-ci" in stdio and "environment:" not in stdio and "PATH=" not in stdio
    # Each job its own builder in the web UI, with its system and stage as tags.
    builder = [b for b in master.api("builders")["builders"] if b["name"] == BASE][0]
    assert set(builder["tags"]) == {"x86_64-linux", "cross-system", "_virtual_"}, builder


@pytest.mark.e2e
def test_the_jobs_that_need_a_failed_job_are_reported_not_built(master):
    flake = master.setup.repo / "flake.nix"
    text, n = re.subn(r'(relibc = mkPkg \{ pname = "relibc"; buildPhase = ")[^"]*(";)',
                      rf'\g<1>echo relibc breaks {uuid.uuid4().hex}; exit 1\g<2>', flake.read_text())
    assert n == 1
    flake.write_text(text)
    revision = commit_all(master.setup.repo, "relibc breaks")
    jobs = forced_jobs(master, revision)
    assert {name: b["results"] for name, b in jobs.items()} == {RELIBC: FAILURE, BASE: SKIPPED, SYSROOT: SKIPPED,
                                                                ION: SKIPPED}
    for name, needed in ((BASE, RELIBC), (SYSROOT, RELIBC), (ION, SYSROOT)):
        assert needed in job_field(jobs[name], "reason") and "did not succeed" in job_field(jobs[name], "reason")
        assert "build" not in [s["name"] for s in master.steps(jobs[name]["buildid"])]
        assert jobs[name]["state_string"].startswith("skipped"), jobs[name]["state_string"]
    # The image needs relibc (through initfs and base): neither it nor its boot is built.
    jobs = forced_jobs(master, revision, attrs="relibc redox-minimal bootloader")
    assert {name: b["results"] for name, b in jobs.items() if name != "x86_64-linux.boot-cloud-hypervisor"} == {
        RELIBC: FAILURE, "x86_64-linux.redox-minimal": SKIPPED, "x86_64-linux.bootloader": SUCCESS,
        "x86_64-linux.boot-qemu": SKIPPED}
    assert "it needs x86_64-linux.redox-minimal, which did not succeed" in job_field(
        jobs["x86_64-linux.boot-qemu"], "reason")
