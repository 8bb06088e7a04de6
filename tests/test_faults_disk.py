"""Disk and garbage collection (issue 11, item 7), for real.

* A nearly full file system (a small tmpfs, filled with a file) that the disk check is
  pointed at (``--disk-path``, ``[workers].disk_path``): ``redox-ci build`` does not build,
  says "not-built" with the free and the needed space, and exits 75; with the filler gone
  the same command builds. Through a real master and worker: every job of the pipeline
  ends EXCEPTION with "not built: disk: ..." in its summary, none FAILURE.
* Roots: a build with ``--gc-roots`` (the default branch's) leaves a root pointing at the
  output, which ``nix-store --gc --print-dead`` does not list; the next build of that
  attribute replaces it and the old output is dead; a build without it makes no root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from buildbot.process.properties import Properties
from buildbot.process.results import EXCEPTION, SUCCESS

from redox_ci.master.jobs import keeps_outputs
from redox_ci.master.schedulers import FORCE_SCHEDULER, PLAN_SCHEDULER

from redox_ci.fixture import commit_all
from tests.master_support import BUILD_WAIT_SECONDS, answer, running_master
from tests.support import requires, run_cli, wait_for

SYSTEM = "x86_64-linux"
ATTR = "fstools"
ANCHOR = 'fstools = simple "fstools" [ ];'
# Small enough to fill in an instant, large enough for tmpfs's own bookkeeping.
TMPFS_MIB = 64
# Left free after the filler: far less than the test's needed space.
LEFT_FREE_MIB = 4
NEEDED_GIB = 0.03  # 30.7 MiB: more than LEFT_FREE_MIB, less than an empty TMPFS_MIB
EXIT_NOT_BUILT = 75


def nonce_fstools(text: str) -> str:
    """fstools as a derivation no earlier run has built."""
    if ANCHOR in text:
        return text.replace(ANCHOR, f'fstools = mkPkg {{ pname = "fstools"; buildPhase = "echo nonce-{uuid.uuid4().hex}"; }};')
    return re.sub(r"echo nonce-[0-9a-f]+", f"echo nonce-{uuid.uuid4().hex}", text)


def new_fstools(repo: Path) -> str:
    """Commit a new fstools; its derivation."""
    flake = repo / "flake.nix"
    flake.write_text(nonce_fstools(flake.read_text()))
    commit_all(repo, "fstools changed")
    return subprocess.run(["nix", "eval", "--raw", f"{repo}#packages.{SYSTEM}.{ATTR}.drvPath"],
                          capture_output=True, text=True, check=True).stdout


def build(drv: str, *args: str) -> tuple[int, dict]:
    proc = run_cli("build", f"--drv={drv}", f"--attr={ATTR}", f"--system={SYSTEM}", *args, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def valid(path: str) -> bool:
    return subprocess.run(["nix-store", "--check-validity", path], capture_output=True).returncode == 0


def mount_tmpfs(mnt: Path) -> None:
    """A tmpfs of TMPFS_MIB MiB at ``mnt``, or the test skipped with why."""
    requires("mount", "umount")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root and CAP_SYS_ADMIN needed): {proc.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    mount_tmpfs(mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(mnt: Path) -> Path:
    """Fill the file system to LEFT_FREE_MIB MiB free, with a real file."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    size = st.f_bavail * st.f_frsize - LEFT_FREE_MIB * 1024 * 1024
    with open(filler, "wb") as f:
        for _ in range(size // (1024 * 1024)):
            f.write(b"\0" * (1024 * 1024))
    return filler


def free_gib(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1024 ** 3


@pytest.mark.e2e
def test_disk_space_too_little_is_not_built(fixture_repo, small_fs):
    drv = new_fstools(fixture_repo)
    filler = fill(small_fs)
    rc, data = build(drv, f"--disk-path={small_fs}", f"--min-free-gib={NEEDED_GIB}")
    assert rc == EXIT_NOT_BUILT and data["status"] == "not-built", data
    assert data["reason"] == (f"disk: {free_gib(small_fs):.1f} GiB free on {small_fs}, {NEEDED_GIB:g} GiB needed "
                              "([workers].min_free_gib)")
    outputs = subprocess.run(["nix-store", "--query", "--outputs", drv], capture_output=True, text=True,
                             check=True).stdout.split()
    assert outputs and not any(valid(o) for o in outputs), "nothing is built on a full disk"
    # The same command builds once there is room: the check reads the real file system.
    filler.unlink()
    rc, data = build(drv, f"--disk-path={small_fs}", f"--min-free-gib={NEEDED_GIB}")
    assert rc == 0 and data["status"] == "success" and data["reason"] == "built", data
    assert all(valid(o) for o in data["outputs"])


@pytest.mark.e2e
def test_disk_space_bad_path_is_a_usage_error():
    requires("nix")
    proc = run_cli("build", "--drv=/nix/store/00000000000000000000000000000000-x.drv", f"--attr={ATTR}",
                   f"--system={SYSTEM}", "--disk-path=/nonexistent/store", "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "disk check: /nonexistent/store does not exist ([workers].disk_path)" in proc.stderr


def dead_paths() -> set[str]:
    proc = subprocess.run(["nix-store", "--gc", "--print-dead"], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


@pytest.mark.e2e
def test_disk_space_gcroot_kept_and_replaced(tmp_path, fixture_repo):
    roots = tmp_path / "gcroots"
    first_drv = new_fstools(fixture_repo)
    rc, first = build(first_drv, f"--gc-roots={roots}")
    assert rc == 0 and first["status"] == "success", first
    [out1] = first["outputs"]
    root = roots / f"{SYSTEM}.{ATTR}" / "fstools"
    assert first["gc_roots"] == [str(root)]
    assert os.readlink(root) == out1
    assert out1 not in dead_paths()

    second_drv = new_fstools(fixture_repo)
    rc, second = build(second_drv, f"--gc-roots={roots}")
    assert rc == 0, second
    [out2] = second["outputs"]
    assert out2 != out1
    assert os.readlink(root) == out2 and list(root.parent.iterdir()) == [root]
    dead = dead_paths()
    assert out2 not in dead and out1 in dead, "the superseded output is left to the collector"

    # Another branch's or a forced build: no --gc-roots, no root.
    third_drv = new_fstools(fixture_repo)
    rc, third = build(third_drv)
    assert rc == 0 and third["gc_roots"] == []
    assert third["outputs"][0] in dead_paths()
    assert os.readlink(root) == out2


@pytest.fixture(scope="module")
def full_disk_master(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("full-disk")
    mount_tmpfs(mnt)
    try:
        fill(mnt)
        extra = f'[workers]\ndisk_path = "{mnt}"\nmin_free_gib = {NEEDED_GIB}\n'
        for m in running_master(tmp_path_factory, "fulldisk", nonce_fstools, extra_toml=extra,
                                systems=[SYSTEM], worker_kind="remote"):
            yield m, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.e2e
def test_disk_space_master_shows_not_built(full_disk_master):
    master, mnt = full_disk_master
    build = master.forced_build(master.force(systems=[SYSTEM], attrs=ATTR))
    jobs = wait_for("the job build", lambda: master.jobs(build["buildid"]) or None, BUILD_WAIT_SECONDS)
    job = jobs[f"{SYSTEM}.{ATTR}"]
    assert job["results"] == EXCEPTION, job
    assert f"{ATTR}: not built: disk: " in job["state_string"] and f"free on {mnt}" in job["state_string"]
    step = master.step(job["buildid"], "build")
    assert step["results"] == EXCEPTION and f"{NEEDED_GIB:g} GiB needed" in step["state_string"]
    assert answer(job)["status"] == "not-built"
    # The plan's stage counts the job as an exception, not as a failure.
    stages = [s["state_string"] for s in master.steps(build["buildid"]) if s["name"].startswith("stage ")]
    assert any("1 exception" in s for s in stages) and not any("failure" in s for s in stages), stages


@pytest.mark.unit
@pytest.mark.parametrize("scheduler, branch, keeps", [
    (PLAN_SCHEDULER, "main", True),    # a commit on the default branch
    (FORCE_SCHEDULER, "main", False),  # forced
    (PLAN_SCHEDULER, "feature", False),  # another branch
])
def test_disk_space_gcroots_only_for_default_branch_commits(scheduler, branch, keeps):
    props = Properties(plan_scheduler=scheduler, branch=branch)
    assert keeps_outputs(props, "main") is keeps


@pytest.fixture(scope="module")
def commits_master(tmp_path_factory):
    """A master whose poller builds each commit on main (every 5 s), x86_64-linux only."""
    yield from running_master(tmp_path_factory, "gcroots", nonce_fstools, systems=[SYSTEM],
                              worker_kind="remote", poll_interval=5)


def commit_plan(master, rev: str) -> dict:
    """The finished plan build the commits scheduler started for ``rev``."""
    def done():
        for b in master.plan_builds():
            req = master.api(f"buildrequests/{b['buildrequestid']}")["buildrequests"][0]
            bs = master.api(f"buildsets/{req['buildsetid']}")["buildsets"][0]
            if bs["sourcestamps"][0]["revision"] == rev and b["complete"]:
                return b
        return None
    return wait_for(f"the pipeline of {rev}", done, BUILD_WAIT_SECONDS)


def outputs_of(master, plan: dict) -> list[str]:
    job = master.jobs(plan["buildid"])[f"{SYSTEM}.{ATTR}"]
    steps = {s["name"]: s for s in master.steps(job["buildid"])}
    assert steps["build"]["results"] == SUCCESS, steps["build"]["state_string"]
    props = job["properties"]
    return props["build_result"][0]["outputs"] if "build_result" in props else props["out_paths"][0]


@pytest.mark.e2e
def test_disk_space_gcroot_through_the_master(commits_master):
    """A commit on main roots its outputs in the worker user's home; the next commit's replaces them."""
    master = commits_master
    root = master.setup.state / "workers" / "home" / ".local/state/redox-ci/gcroots" / f"{SYSTEM}.{ATTR}" / ATTR
    new_fstools(master.setup.repo)
    out1 = outputs_of(master, commit_plan(master, master_rev(master)))[0]
    assert os.readlink(root) == out1
    new_fstools(master.setup.repo)
    out2 = outputs_of(master, commit_plan(master, master_rev(master)))[0]
    assert out2 != out1 and os.readlink(root) == out2
    assert out1 in dead_paths() and out2 not in dead_paths()


def master_rev(master) -> str:
    return subprocess.run(["git", "-C", str(master.setup.repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
