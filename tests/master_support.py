"""A real Buildbot master (and, when asked, a real worker process) for end-to-end tests.

The master runs as ``buildbot start`` in a temporary directory, exactly as
``redox-ci local`` sets it up; tests talk to it only over HTTP (REST API, force
scheduler JSON-RPC, change hook), as a user or GitHub would.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support import alive, requires, wait_for

from redox_ci.fixture import commit_all, make_fixture_repo
from redox_ci.cache.localserver import LocalS3Server
from redox_ci.local import CacheWiring, LocalSetup, prepare, signing_key
from redox_ci.workerproc import WorkerProcesses, create_workers, start_argv

# Guards against a hung master or build: a test that waits longer fails with what it
# saw. Generous on purpose; these are not speed checks.
STARTUP_WAIT_SECONDS = 120
# What `buildbot stop` gives a daemon to shut down cleanly before it gives up.
STOP_GRACE_SECONDS = 10
BUILD_WAIT_SECONDS = 900
POLL_SECONDS = 0.5


def job_field(build: dict, name: str):
    """A field of the job a job build ran: its ``job`` property (``Job.to_json``)."""
    return build["properties"]["job"][0][name]


def answer(build: dict, prop: str = "build_result") -> dict:
    """The verb's JSON answer a job build kept: ``build_result``, ``push_result`` or ``boot_result``."""
    return build["properties"][prop][0]


def cargo_counts(build: dict) -> dict:
    """The test counts of a job's build (passed, failed, ignored, suites)."""
    return answer(build)["tests"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_buildbot():
    requires("buildbot", "buildbot-worker", "nix", "git")


@dataclass
class Master:
    setup: LocalSetup
    admin_password: str
    worker_password: str | None = None
    webhook_secret: str | None = None
    _worker_dirs: list[Path] = field(default_factory=list)
    _worker_procs: WorkerProcesses | None = None
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return self.setup.url

    def api(self, path: str, **params) -> dict:
        r = self.session.get(self.url + "api/v2/" + path, params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self.start_master()
        self.start_workers()

    def start_master(self) -> None:
        """The master process alone (after kill_master, the worker processes still run and
        reconnect by themselves)."""
        proc = subprocess.run(["buildbot", "start", str(self.setup.master_dir)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log = (self.setup.master_dir / "twistd.log").read_text()[-3000:]
            raise AssertionError(f"master did not start:\n{proc.stdout}\n{proc.stderr}\n{log}")
        wait_for("the web UI", self._up, STARTUP_WAIT_SECONDS)

    def start_workers(self) -> None:
        """The inventory's worker processes (a remote worker), once the master answers."""
        if self.setup.worker_kind == "remote":
            self._start_worker()
        wait_for("the worker to connect", self._worker_connected, STARTUP_WAIT_SECONDS)

    def _up(self) -> bool:
        try:
            return requests.get(self.url + "api/v2/builders", timeout=5).ok
        except requests.ConnectionError:
            return False

    def _worker_connected(self) -> bool:
        workers = self.api("workers")["workers"]
        return bool(workers) and all(w["connected_to"] for w in workers)

    def _start_worker(self) -> None:
        """One buildbot-worker process per slot of the inventory's worker (NAME-1..N), as the
        unprivileged worker user when the tests run as root (redox_ci.workerproc)."""
        procs = create_workers(self.setup, self.worker_password)
        for wdir in procs.dirs:
            procs.run(start_argv(wdir), check=True, capture_output=True)
        self._worker_dirs = procs.dirs
        self._worker_procs = procs

    # --- faults, injected for real --------------------------------------------
    def kill_worker(self, name: str) -> None:
        """SIGKILL the buildbot-worker process of slot ``name``, and then what it ran (the
        build's redox-ci and Nix client): a worker host that died."""
        kill_tree(int((self.setup.state / "workers" / name / "twistd.pid").read_text()))

    def start_worker(self, name: str) -> None:
        """Start slot ``name``'s buildbot-worker process again (it reconnects by itself)."""
        assert self._worker_procs, "only a remote worker's processes can be started again"
        self._worker_procs.run(start_argv(self.setup.state / "workers" / name), check=True, capture_output=True)

    def kill_master(self) -> None:
        """SIGKILL the master process: a crash, nothing shut down cleanly."""
        pid = int((self.setup.master_dir / "twistd.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for("the killed master to be gone", lambda: not alive(pid), STARTUP_WAIT_SECONDS)

    def stop(self) -> None:
        """The master first, then its workers: SIGTERM, as ``buildbot stop`` sends, and each
        is killed if it is still there after STOP_GRACE_SECONDS.

        In that order its builds are stopped while their workers are connected: a worker
        that goes away just as a build starts on it can leave Buildbot 4.3's clean shutdown
        waiting for that build for ever (seen: 'conn' is None in Build.startBuild).
        Not ``buildbot stop``: it waits for kill(pid, 0) to fail, which it never does while
        the stopped daemon is this process's unreaped child (tests.support.adopt_orphans).
        """
        stop_daemon(self.setup.master_dir / "twistd.pid")
        for wdir in self._worker_dirs:
            stop_daemon(wdir / "twistd.pid")

    # --- acting as a user -----------------------------------------------------
    def login(self, user: str = "admin", password: str | None = None) -> requests.Session:
        s = requests.Session()
        r = s.get(self.url + "auth/login", auth=(user, password or self.admin_password), timeout=30)
        r.raise_for_status()
        return s

    def builder_id(self, name: str) -> int:
        for b in self.api("builders")["builders"]:
            if b["name"] == name:
                return b["builderid"]
        raise AssertionError(f"no builder {name!r}")

    def force(self, session: requests.Session | None = None, **params) -> requests.Response:
        body = {"builderid": str(self.builder_id("redox/plan")), "branch": "main", "revision": "",
                "systems": ["x86_64-linux", "aarch64-linux"], "attrs": "", "reason": "test"}
        body.update(params)
        return (session or self.login()).post(
            self.url + "api/v2/forceschedulers/force",
            json={"jsonrpc": "2.0", "method": "force", "id": 1, "params": body}, timeout=30)

    def forced_build(self, response: requests.Response) -> dict:
        """The finished build that a force call's answer started."""
        assert response.ok and "result" in response.json(), response.text
        return self.build_for_request(int(list(response.json()["result"][1].values())[0]))

    def forced_request(self, response: requests.Response) -> int:
        """The build request a force call's answer queued."""
        assert response.ok and "result" in response.json(), response.text
        return int(list(response.json()["result"][1].values())[0])

    def builds_of_request(self, brid: int) -> list[dict]:
        """Every build of a request, oldest first (a retried request has several)."""
        return sorted(self.api("builds", buildrequestid=brid)["builds"], key=lambda b: b["buildid"])

    def first_build(self, brid: int) -> dict:
        """The request's first build, once it started."""
        return wait_for(f"a build of request {brid}", lambda: (self.builds_of_request(brid) or [None])[0],
                        BUILD_WAIT_SECONDS)

    # --- reading results ------------------------------------------------------
    def build_for_request(self, brid: int) -> dict:
        def done():
            builds = self.api("builds", buildrequestid=brid)["builds"]
            return builds[0] if builds and builds[0]["complete"] else None
        return wait_for(f"build request {brid}", done, BUILD_WAIT_SECONDS)

    def plan_builds(self) -> list[dict]:
        return self.api(f"builders/{self.builder_id('redox/plan')}/builds", order="-number")["builds"]

    def children(self, buildid: int) -> list[dict]:
        """Every build a plan build triggered, with its properties."""
        out = []
        for bs in self.api("buildsets", parent_buildid=buildid)["buildsets"]:
            for br in self.api("buildrequests", buildsetid=bs["bsid"])["buildrequests"]:
                out += self.api("builds", buildrequestid=br["buildrequestid"], property="*")["builds"]
        return out

    def jobs(self, buildid: int) -> dict[str, dict]:
        """Triggered builds by job name ("system.attr"), the systems' evaluations apart."""
        return {name: b for name, b in self._by_name(buildid).items() if not _is_evaluation(b)}

    def evaluations(self, buildid: int) -> dict[str, dict]:
        """The systems' evaluations a plan build triggered, by system."""
        return {b["properties"]["virtual_builder_tags"][0][0]: b for b in self._by_name(buildid).values()
                if _is_evaluation(b)}

    def _by_name(self, buildid: int) -> dict[str, dict]:
        return {b["properties"]["virtual_builder_name"][0]: b for b in self.children(buildid)}

    def steps(self, buildid: int) -> list[dict]:
        return self.api(f"builds/{buildid}/steps")["steps"]

    def step(self, buildid: int, name: str) -> dict:
        return [s for s in self.steps(buildid) if s["name"] == name][0]

    def step_logs(self, buildid: int, name: str) -> dict[str, str]:
        """The text of every log of the step ``name`` of a build, by log name."""
        step = self.step(buildid, name)
        return {log["name"]: self.session.get(self.url + f"api/v2/logs/{log['logid']}/raw", timeout=30).text
                for log in self.api(f"steps/{step['stepid']}/logs")["logs"]}


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def stop_daemon(pid_file: Path) -> None:
    """SIGTERM the twistd daemon ``pid_file`` names, wait for it to be gone (reaped), and
    SIGKILL it and what it ran if it is not gone after STOP_GRACE_SECONDS."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        kill_tree(pid)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` first (so it cannot react), then every process that was below it."""
    below = descendants(pid)
    for p in [pid, *below]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(f"process {pid} to be gone", lambda: not alive(pid), STARTUP_WAIT_SECONDS)


def slow_package(seconds: int, *names: str):
    """For ``running_master(edit_flake=...)``: the fixture's fstools (or the ``simple`` packages
    ``names``) sleeps ``seconds`` while it builds, a new derivation at every run (a nonce:
    Nix's store outlives a run, and a package built before would be "already built" at once)."""
    def edit(text: str) -> str:
        for name in names or ["fstools"]:
            old = f'{name} = simple "{name}" [ ];'
            assert old in text, old
            text = text.replace(old, f'{name} = mkPkg {{ pname = "{name}"; '
                                     f'buildPhase = "sleep {seconds}; echo {uuid.uuid4().hex}"; }};')
        return text
    return edit


def s3_server(tmp_path_factory):
    """For module fixtures: a local S3 server (moto, over HTTP) for a master's cache."""
    with LocalS3Server(state_dir=tmp_path_factory.mktemp("s3")) as server:
        yield server


def cache_wiring(s3_url: str, bucket: str, keys_dir: Path) -> CacheWiring:
    """A master's [cache] on a test S3 server (moto), with a new signing key. The server
    takes any credentials; random ones make a "secret in no log" check mean something."""
    key_file, public_key = signing_key(keys_dir)
    credentials = {"aws_access_key_id": "AKIA" + secrets.token_hex(8).upper(),
                   "aws_secret_access_key": secrets.token_urlsafe(30)}
    return CacheWiring(s3_url, bucket, key_file, public_key, credentials)


def make_master(tmp_path: Path, repo: Path, emulated_systems: list[str] | None = None, **setup_kwargs) -> Master:
    """``emulated_systems``: the worker builds these by emulation too."""
    setup = LocalSetup(state=tmp_path / "ci", repo=repo, www_port=free_port(), pb_port=free_port(),
                       worker_emulated_systems=list(emulated_systems or []), **setup_kwargs)
    worker_password = "worker-secret-Zq81" if setup.worker_kind == "remote" else None
    webhook_secret = "hook-secret-7Yv2" if setup.github_webhook else None
    admin = prepare(setup, admin_password="admin-pass-Kd93", worker_password=worker_password,
                    webhook_secret=webhook_secret)
    return Master(setup, admin, worker_password, webhook_secret)


def _is_evaluation(build: dict) -> bool:
    """A system's evaluation (redox_ci.master.evaluation), tagged [system, "eval"] (and
    Buildbot's own "_virtual_")."""
    return build["properties"].get("virtual_builder_tags", [[None, None]])[0][1:2] == ["eval"]


def running_master(tmp_path_factory, name: str, edit_flake=None, **setup_kwargs):
    """For module fixtures: a started master on a fresh fixture repository, stopped after.

    ``edit_flake(text) -> text`` changes the fixture's flake.nix before the master starts.
    """
    require_buildbot()
    tmp = tmp_path_factory.mktemp(name)
    repo = tmp / "redox-flake"
    make_fixture_repo(repo)
    if edit_flake:
        flake = repo / "flake.nix"
        flake.write_text(edit_flake(flake.read_text()))
        commit_all(repo, f"fixture changed for {name}")
    m = make_master(tmp, repo, **setup_kwargs)
    m.start()
    try:
        yield m
    finally:
        m.stop()
