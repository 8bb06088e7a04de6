"""``redox-ci local`` as ``./run.sh`` runs it: a child process with its own state directory
and free ports, watched from outside (its output, ``ss``, /proc, the REST API).

A taken port stops the start with a sentence and leaves no process; every socket it
listens on is on 127.0.0.1; a fresh state builds the flake's current commit by itself,
once; a second instance on the same state is refused; SIGINT and SIGTERM stop
everything it started, a build in progress included.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from redox_ci.errors import ConfigError
from redox_ci.local import LocalSetup, secrets_text, settings_text
from redox_ci.emulation import emulated_systems
from redox_ci.localrun import FIRST_BUILD_REASON, start_failure
from redox_ci.workerproc import WORKER_USER
from tests.master_support import BUILD_WAIT_SECONDS, STARTUP_WAIT_SECONDS, Master, answer, cargo_counts, free_port
from tests.support import CLI, requires, wait_for

SUCCESS = 0
# A start that fails on a port fails before starting anything: seconds, not minutes.
REFUSAL_SECONDS = 60
# Stopping: the master's own stop (up to 30 s) and the S3 server saving its objects.
STOP_SECONDS = 90
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the local default as a child process -------------------------------------------------
@dataclass
class Local:
    state: Path
    web: int
    pb: int
    s3: int
    proc: subprocess.Popen | None = None

    @property
    def out(self) -> Path:
        return self.state.parent / f"{self.state.name}.out"

    @property
    def err(self) -> Path:
        return self.state.parent / f"{self.state.name}.err"

    def argv(self, *extra: str) -> list[str]:
        # What ./run.sh execs after install.sh and nix-env.sh: `redox-ci local "$@"`.
        return [*CLI, "local", "--state-dir", str(self.state), "--port", str(self.web),
                "--pb-port", str(self.pb), "--s3-port", str(self.s3), *extra]

    def start(self, *extra: str) -> Local:
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(self.argv(*extra), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=REPO_ROOT)
        return self

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*extra), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              cwd=REPO_ROOT, timeout=REFUSAL_SECONDS)

    def stdout(self) -> str:
        return self.out.read_text()

    def wait_ready(self) -> str:
        """Until it prints the web UI's address; fail with what it said if it stops instead."""
        def said():
            if self.proc.poll() is not None:
                raise AssertionError(f"redox-ci local exited {self.proc.returncode}:\n{self.stdout()}\n"
                                     f"{self.err.read_text()}")
            return "web UI:" in self.stdout()
        wait_for("redox-ci local to print the web UI's address", said, STARTUP_WAIT_SECONDS)
        return self.stdout()

    def reader(self) -> Master:
        """The REST API, read as the tests of the master do."""
        password = re.search(r"log in as admin / (\S+)", self.stdout()).group(1)
        return Master(LocalSetup(state=self.state, repo=self.state / "redox-flake", www_port=self.web), password)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"redox-ci local did not stop within {STOP_SECONDS} s of {sig!r}") from None


def new_local(tmp_path: Path, name: str = "state") -> Local:
    return Local(tmp_path / name, free_port(), free_port(), free_port())


# --- processes, seen from /proc ------------------------------------------------------------
def cmdline(proc: Path) -> str:
    return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): a pid seen twice with the
    same start time is the same process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(root: int) -> dict[int, str]:
    """``root`` and every process below it, with their start times."""
    parents = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [c for c, parent in parents.items() if parent == pid and c not in tree]
    return {pid: t for pid in tree if (t := start_time(pid))}


def alive(procs: dict[int, str]) -> list[str]:
    """Those of ``procs`` still running (zombies are gone already), with their command lines."""
    left = []
    for pid, started in procs.items():
        if start_time(pid) != started:
            continue
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            left.append(f"{pid}: {cmdline(Path(f'/proc/{pid}'))}")
        except OSError:
            continue
    return left


def of_state(state: Path) -> list[str]:
    """Running processes whose command line names ``state`` or whose directory is in it."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            line, cwd = cmdline(p), os.readlink(p / "cwd")
        except OSError:
            continue
        if str(state) in line or cwd == str(state) or cwd.startswith(f"{state}/"):
            found.append(f"{p.name}: {line}")
    return found


def listening(pids: set[int]) -> list[str]:
    """The local addresses of the TCP sockets ``pids`` listen on (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if pids & {int(p) for p in re.findall(r"pid=(\d+)", line)}]


def nothing_left(local: Local, before: dict[int, str]) -> None:
    """Neither a process that was running under ``redox-ci local`` nor one of its state."""
    def gone():
        return not alive(before) and not of_state(local.state)
    try:
        wait_for("every process it started to be gone", gone, 20)
    except AssertionError:
        raise AssertionError("left behind:\n" + "\n".join(alive(before) + of_state(local.state))) from None


def e2e(test):
    """An end-to-end test: it runs ``redox-ci local``, which needs these tools."""
    return pytest.mark.e2e(pytest.mark.usefixtures("_tools")(test))


@pytest.fixture
def _tools():
    requires("buildbot", "nix", "git")


# --- settings written from data --------------------------------------------------------------
@pytest.mark.unit
def test_settings_and_secrets_are_escaped_toml(tmp_path):
    """Quotes, backslashes and newlines in a path or a password arrive intact."""
    odd = 'a"b\\c\nd'
    setup = LocalSetup(state=tmp_path / odd, repo=tmp_path / f"repo {odd}", www_port=18011, pb_port=18012)
    data = tomllib.loads(settings_text(setup))
    assert data["flake"]["repo"] == str(tmp_path / f"repo {odd}")
    assert data["www"]["interface"] == data["workers"]["interface"] == "127.0.0.1"
    assert tomllib.loads(secrets_text(odd))["users"]["admin"] == odd


@pytest.mark.unit
def test_settings_are_checked_before_they_are_written(tmp_path):
    setup = LocalSetup(state=tmp_path, repo=tmp_path / "repo", systems=["not a system"])
    with pytest.raises(ConfigError, match=r"flake\.systems"):
        settings_text(setup)


@pytest.mark.unit
def test_extra_settings_add_workers_and_tables(tmp_path):
    setup = LocalSetup(state=tmp_path, repo=tmp_path / "repo", extra_toml=(
        '[[workers.worker]]\nname = "second"\nkind = "local"\n\n[plan]\nchecks = ["cookbook"]\n'))
    data = tomllib.loads(settings_text(setup))
    assert [w["name"] for w in data["workers"]["worker"]] == ["local-worker", "second"]
    assert data["plan"]["checks"] == ["cookbook"]


@pytest.mark.unit
def test_an_interface_must_be_an_address(tmp_path):
    setup = LocalSetup(state=tmp_path, repo=tmp_path / "repo", interface="localhost")
    with pytest.raises(ConfigError, match=r"www\.interface: must be an IP address .* got 'localhost'"):
        settings_text(setup)


@pytest.mark.unit
@pytest.mark.parametrize("interface,endpoint", [("127.0.0.1", "interface=127.0.0.1"), ("::1", r"interface=\:\:1")])
def test_the_master_listens_on_the_interface_of_its_settings(tmp_path, interface, endpoint):
    from redox_ci.master.config import build_config
    from redox_ci.settings_file import load
    setup = LocalSetup(state=tmp_path, repo=tmp_path / "repo", www_port=18011, pb_port=18012, interface=interface,
                       worker_kind="remote")
    setup.settings_file.write_text(settings_text(setup))
    setup.secrets_file.write_text(secrets_text("pw", worker=(setup.worker_name, "wpw")))
    c = build_config(load(setup.settings_file))
    assert c["www"]["port"] == f"tcp:18011:{endpoint}"
    assert c["protocols"]["pb"]["port"] == f"tcp:18012:{endpoint}"


# --- why the master did not start, from its log ----------------------------------------------
# Excerpts of twistd.log from real failed starts (Buildbot 4.3, Twisted 26).
LOG_PORT_TAKEN = """\
2026-11-25 21:23:47+0000 [-] while starting BuildMaster
\tTraceback (most recent call last):
\t  File "/venv/lib/python3.11/site-packages/twisted/internet/tcp.py", line 1438, in startListening
\t    raise CannotListenError(self.interface, self.port, le)
\ttwisted.internet.error.CannotListenError: Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.
\t
2026-11-25 21:23:47+0000 [-] BuildMaster startup failed
"""
LOG_CONFIG = """\
2026-11-25 21:23:56+0000 [-] Loading configuration from '/s/master/master.cfg'
2026-11-25 21:23:57+0000 [-] Configuration Errors:
2026-11-25 21:23:57+0000 [-]   /s/settings.toml: www.prot: unknown key (misspelt?)
2026-11-25 21:23:57+0000 [-] Halting master.
2026-11-25 21:23:57+0000 [-] BuildMaster startup failed
"""


@pytest.mark.unit
def test_master_start_failures_in_a_sentence(tmp_path):
    setup = LocalSetup(state=tmp_path, repo=tmp_path, www_port=free_port(), pb_port=free_port())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", setup.pb_port))
        holder.listen()
        said = start_failure(LOG_PORT_TAKEN.format(port=setup.pb_port), setup)
    assert said == (f"cannot start the worker port: port {setup.pb_port} on 127.0.0.1 is taken by another program "
                    f"(pid {os.getpid()}, {Path('/proc/self/comm').read_text().strip()}); "
                    "stop it or choose another port with --pb-port")
    assert start_failure(LOG_CONFIG, setup) == (
        "the master refused its configuration: /s/settings.toml: www.prot: unknown key (misspelt?)")
    assert start_failure("\tImportError: cannot import name 'x'\n", setup) == (
        "the master did not start: ImportError: cannot import name 'x'")


# --- the start, end to end ---------------------------------------------------------------------
@pytest.mark.parametrize("which,flag", [("web", "--port"), ("pb", "--pb-port"), ("s3", "--s3-port")])
@e2e
def test_a_taken_port_stops_the_start_with_a_sentence(tmp_path, which, flag):
    local = new_local(tmp_path)
    port = getattr(local, which)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = local.run()
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"redox-ci local: cannot start .+: port {port} on 127\.0\.0\.1 is taken by another program "
                        rf"\(pid {os.getpid()}, [^)]+\); stop it or choose another port with {flag}", lines[0]), lines
    assert "web UI:" not in done.stdout
    assert not of_state(local.state)


@e2e
def test_a_port_taken_after_the_check_is_read_from_the_masters_log(tmp_path):
    """The web port is taken once the S3 server is up (the port check passed): the
    master fails to listen, says so in twistd.log, and the S3 server is stopped again."""
    local = new_local(tmp_path).start()
    wait_for("the S3 server to be up", lambda: (local.state / "s3" / "server.json").exists() or local.proc.poll(),
             STARTUP_WAIT_SECONDS, step=0.05)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", local.web))
        holder.listen()
        assert local.proc.wait(STARTUP_WAIT_SECONDS) == 2
    said = local.err.read_text().strip()
    assert re.fullmatch(rf"redox-ci local: cannot start the web UI: port {local.web} on 127\.0\.0\.1 is taken by another "
                        rf"program \(pid {os.getpid()}, [^)]+\); stop it or choose another port with --port "
                        rf"\(see {re.escape(str(local.state))}/master/twistd\.log\)", said), said
    assert "web UI:" not in local.stdout()
    assert not of_state(local.state)


@e2e
def test_a_missing_tool_is_named(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("buildbot", "git"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    local = new_local(tmp_path)
    done = subprocess.run(local.argv(), capture_output=True, text=True, cwd=REPO_ROOT, timeout=REFUSAL_SECONDS,
                          env={**os.environ, "PATH": str(bin_dir)})
    assert done.returncode == 2, done
    assert done.stderr.startswith("redox-ci local: cannot start: nix not found on PATH; ./run.sh installs"), done.stderr
    assert not of_state(local.state)


@e2e
def test_an_unreadable_secrets_file_stops_the_start_and_the_s3_server(tmp_path):
    """The S3 server is up when the secrets are read: it is stopped again."""
    local = new_local(tmp_path)
    local.state.mkdir()
    (local.state / "secrets.toml").write_text('[users]\nadmin = "unterminated\n')
    done = local.run()
    assert done.returncode == 2, done
    assert re.fullmatch(rf"redox-ci local: {re.escape(str(local.state))}/secrets\.toml: cannot read the admin password "
                        r"\(.+\); remove the file to have a new one made", done.stderr.strip()), done.stderr
    assert "S3 server on" in (local.state / "s3" / "server.log").read_text()
    assert not of_state(local.state)


@e2e
def test_signals_stop_everything_and_a_restart_builds_nothing_new(tmp_path):
    """SIGTERM while the first build runs, then a restart on the same state (no second
    first build), then SIGINT: each time every process it started is gone."""
    local = new_local(tmp_path).start()
    local.wait_ready()
    master = local.reader()
    plan = master.builder_id("redox/plan")

    def job_running_or_done():
        builds = master.api("builds")["builds"]
        return any(b["builderid"] != plan and not b["complete"] for b in builds) or any(
            b["builderid"] == plan and b["complete"] for b in builds)
    # Jobs take seconds each: one is caught running, unless Nix had every output already.
    wait_for("a job of the first build to be running", job_running_or_done, BUILD_WAIT_SECONDS, step=0.2)
    started = descendants(local.proc.pid)
    assert len(started) >= 3, started  # redox-ci local, the S3 server, the master
    assert local.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    nothing_left(local, started)

    local.start()
    out = local.wait_ready()
    assert "first build" not in out
    requests_for_plan = master.api("buildrequests", builderid=plan)["buildrequests"]
    assert len(requests_for_plan) == 1, requests_for_plan
    started = descendants(local.proc.pid)
    assert local.stop(signal.SIGINT) == 128 + signal.SIGINT
    nothing_left(local, started)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One instance on a fresh state, for the tests that only look at it."""
    requires("buildbot", "nix", "git")
    local = new_local(tmp_path_factory.mktemp("local")).start()
    try:
        local.wait_ready()
        yield local
    finally:
        local.stop()


@e2e
def test_the_worker_is_a_process_of_the_unprivileged_worker_user(running):
    if os.geteuid() != 0:
        pytest.skip("only root hands the worker to the worker user; others run it themselves")
    workers = {pid for pid in descendants(running.proc.pid)
               if b"buildbot-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()}
    assert len(workers) == 2, workers  # one per slot
    assert {Path(f"/proc/{pid}").stat().st_uid for pid in workers} == {pwd.getpwnam(WORKER_USER).pw_uid}


@e2e
def test_it_listens_on_loopback_only(running):
    if not shutil.which("ss"):
        pytest.skip("ss is not installed (Debian: iproute2)")
    addresses = listening(set(descendants(running.proc.pid)))
    assert f"127.0.0.1:{running.web}" in addresses and f"127.0.0.1:{running.s3}" in addresses, addresses
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


@e2e
def test_a_second_instance_on_the_same_state_is_refused(running, tmp_path):
    other = Local(running.state, free_port(), free_port(), free_port())
    done = other.run()
    assert done.returncode == 2, done
    assert done.stderr.strip() == (f"redox-ci local: another instance with state in {running.state} is already "
                                   f"running (pid {running.proc.pid}); stop it first (Ctrl-C where it runs)")
    assert running.proc.poll() is None
    assert running.reader().api("builders")["builders"]


@e2e
def test_the_first_build_starts_by_itself_and_completes(running):
    """No force: the plan of the flake's current commit, its jobs, the boot and the cache push."""
    master = running.reader()
    assert "first build:" in running.stdout()
    plan = wait_for("the first build", lambda: master.plan_builds(), STARTUP_WAIT_SECONDS)[-1]
    request = master.api(f"buildrequests/{plan['buildrequestid']}")["buildrequests"][0]
    assert FIRST_BUILD_REASON in master.api(f"buildsets/{request['buildsetid']}")["buildsets"][0]["reason"]
    build = master.build_for_request(plan["buildrequestid"])
    jobs = master.jobs(build["buildid"])
    boot = jobs["x86_64-linux.boot-qemu"]
    assert boot["results"] == SUCCESS, boot["state_string"]
    cookbook = jobs["x86_64-linux.cookbook"]
    assert cookbook["results"] == SUCCESS, cookbook["state_string"]
    assert len(answer(cookbook, "push_result")["pushed"]) >= 1
    emulated, why_not = emulated_systems(["aarch64-linux"])
    if emulated:
        assert "builds aarch64-linux by emulation" in running.stdout()
        arm = jobs["aarch64-linux.cookbook"]
        assert arm["results"] == SUCCESS and cargo_counts(arm)["passed"] == 9, arm["state_string"]
    else:
        assert f"does not build aarch64-linux, so its jobs are SKIPPED: {why_not['aarch64-linux']}" in running.stdout()
    # When it ends, the terminal lists what did not succeed and the functional test image's tests.
    wait_for("the first build's report", lambda: "first build finished:" in running.stdout(), STARTUP_WAIT_SECONDS)
    report = running.stdout().split("first build finished:", 1)[1].splitlines()
    assert "    failed   nix-eval-arith: expected 42, got 41" in report
    assert "    FUNC_TEST: 3 passed, 1 failed, 1 skipped" in report
    assert any(line.startswith("  x86_64-linux.boot-qemu-redox-functional-test: failure: ") for line in report)
