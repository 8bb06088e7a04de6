"""Running ``redox-ci local``: one instance per state directory, its ports checked, the
S3 server, then the master and its worker, watched until they stop or we are told to
stop; on a fresh state, the first build.

Each part's start is checked: the S3 server writes its URL once it serves, the master
must answer on its web UI's REST API with every worker connected. A part that fails
says why in one sentence (for the master, read from the new part of ``twistd.log``),
and what had started is stopped again: the master first, so that no push is cut
short, then the S3 server, which saves its objects on the way out. SIGINT and SIGTERM
take the same way out.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from . import firstbuild
from .errors import UsageError
from .local import LOCAL_POLL_SECONDS, CacheWiring, LocalSetup, prepare, signing_key
from .processes import lock_instance, port_problem, spawn, stop, taken
from .workerproc import create_workers, start_argv, worker_account

LOCK_FILE = "local.lock"
# Systems the local worker may build besides its own, by emulation where the host allows.
FOREIGN_SYSTEMS = ["aarch64-linux"]
# Tools the start needs: the master, the fixture repository and poller, the pipeline.
TOOLS = ("buildbot", "git", "nix")

# A master finishing its running steps on SIGTERM; past this it is killed.
MASTER_STOP_SECONDS = 30
# A worker stops at once once its master is gone.
WORKER_STOP_SECONDS = 10
# Master start-up and the local worker connecting, on a loaded 2-core machine (~20 s).
READY_SECONDS = 180
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 10
# Enough of the master's console to show why it did not get as far as its log.
CONSOLE_TAIL_CHARS = 4000
FIRST_BUILD_REASON = "first start of redox-ci local: the flake's current commit"

CANNOT_LISTEN = re.compile(r"CannotListenError: Couldn't listen on (\S+):(\d+): (?:\[Errno \d+\] )?(.*?)\.?$", re.M)
CONFIG_ERRORS = "Configuration Errors:"
# twistd's prefix on each log line: "2026-11-25 21:23:57+0000 [-] ".
LOG_PREFIX = re.compile(r"^\S+ \S+ \[[^\]]*\] ")
EXCEPTION_LINE = re.compile(r"^\t(\w[\w.]*(?:Error|Exception)\w*: .+)$", re.M)


def local_capabilities() -> list[str]:
    """"kvm" when this host can run Cloud Hypervisor: a usable /dev/kvm and the binary."""
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and shutil.which("cloud-hypervisor")
    return ["kvm"] if usable else []


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: stop what was started (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, _frame):
    raise Stopped(signum)


def emulated_here(systems: list[str]) -> list[str]:
    """Of ``systems``, those this host builds by emulation; says which, and why not the others."""
    from .emulation import emulated_systems
    emulated, why_not = emulated_systems(systems)
    for system in emulated:
        print(f"redox-ci local: the worker builds {system} by emulation (qemu-user), more slowly than natively")
    for system, reason in why_not.items():
        print(f"redox-ci local: the worker does not build {system}, so its jobs are SKIPPED: {reason}")
    return emulated


def check_ports(setup: LocalSetup, s3_port: int) -> None:
    """Refuse to start, naming the port, when one of the three cannot be listened on."""
    for what, port, flag in (("the web UI", setup.www_port, "--port"), ("the worker port", setup.pb_port, "--pb-port"),
                             ("the local S3 server", s3_port, "--s3-port")):
        problem = port_problem(setup.interface, port)
        if problem:
            raise UsageError(f"cannot start {what}: port {port} on {setup.interface} {problem}; "
                             f"stop it or choose another port with {flag}")


def start_failure(log: str, setup: LocalSetup) -> str:
    """Why the master stopped during start-up, from what it wrote to twistd.log."""
    m = CANNOT_LISTEN.search(log)
    if m:
        host, port, why = m.group(1), int(m.group(2)), m.group(3)
        what, flag = {setup.www_port: ("the web UI", "--port"), setup.pb_port: ("the worker port", "--pb-port")
                      }.get(port, ("the master", "--port"))
        problem = taken(port) if "in use" in why else f"cannot be listened on: {why}"
        return f"cannot start {what}: port {port} on {host} {problem}; stop it or choose another port with {flag}"
    lines = [LOG_PREFIX.sub("", line) for line in log.splitlines()]
    if CONFIG_ERRORS in lines:
        errors = []
        for line in lines[lines.index(CONFIG_ERRORS) + 1:]:
            if not line.startswith("  "):
                break
            errors.append(line.strip())
        return "the master refused its configuration: " + "; ".join(errors)
    exceptions = EXCEPTION_LINE.findall(log)
    if exceptions:
        return f"the master did not start: {exceptions[-1]}"
    return "the master stopped during start-up"


class Master:
    """``buildbot start --nodaemon``: the master in this process's care."""

    def __init__(self, setup: LocalSetup):
        self.setup = setup
        self.log = setup.master_dir / "twistd.log"
        self.console = setup.master_dir / "console.log"
        self.proc: subprocess.Popen | None = None
        self._since = 0

    def start(self) -> None:
        self._since = self.log.stat().st_size if self.log.exists() else 0
        with open(self.console, "wb") as console:  # what it says before its log is open
            self.proc = spawn(["buildbot", "start", "--nodaemon", str(self.setup.master_dir)],
                              stdout=console, stderr=subprocess.STDOUT)

    def new_log(self) -> str:
        """What the master logged since this start (twistd.log, then its console)."""
        text = ""
        if self.log.exists():
            with open(self.log, "rb") as f:
                size = f.seek(0, 2)
                f.seek(self._since if size >= self._since else 0)  # smaller: rotated, read it all
                text = f.read().decode(errors="replace")
        if self.console.exists():
            text += "\n" + self.console.read_text(errors="replace")[-CONSOLE_TAIL_CHARS:]
        return text

    def failed(self) -> UsageError:
        return UsageError(f"{start_failure(self.new_log(), self.setup)} (see {self.log})")

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Until the web UI answers and every worker is connected; else the reason."""
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.failed()
            try:
                workers = get_json(self.setup.url + "api/v2/workers")["workers"]
                answered = True
                if workers and all(w["connected_to"] for w in workers):
                    return
            except (OSError, ValueError, http.client.HTTPException):  # not up yet
                pass
            time.sleep(POLL_SECONDS)
        if answered:
            raise UsageError(f"cannot start the local worker: it did not connect to the master within "
                             f"{timeout:.0f} s (see {self.log})")
        raise UsageError(f"cannot start the master: it did not answer on {self.setup.url} within "
                         f"{timeout:.0f} s (see {self.log})")

    def wait(self) -> int:
        """Until the master stops by itself (it should not): a sentence saying so."""
        code = self.proc.wait()
        raise UsageError(f"the master stopped by itself (exit status {code}; see {self.log})")

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, MASTER_STOP_SECONDS)


def get_json(url: str, opener=None) -> dict:
    with (opener or urllib.request.build_opener()).open(url, timeout=HTTP_TIMEOUT) as r:
        return json.load(r)


def start_first_build(setup: LocalSetup, password: str) -> tuple[str, int] | None:
    """On a master that has never had a build request: force the plan of the first
    branch's tip, as an admin would from the web UI. Returns the sentence to print and the
    buildset, or None when this is not the first start."""
    from .master.pipeline import PLAN_BUILDER
    api = setup.url + "api/v2/"
    if get_json(api + "buildrequests?limit=1")["buildrequests"]:
        return None
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    opener.open(urllib.request.Request(setup.url + "auth/login", headers={"Authorization": f"Basic {token}"}),
                timeout=HTTP_TIMEOUT).close()
    builders = get_json(api + "builders", opener)["builders"]
    builderid = next(b["builderid"] for b in builders if b["name"] == PLAN_BUILDER)
    params = {"builderid": str(builderid), "branch": "main", "revision": "", "systems": list(setup.systems),
              "attrs": "", "reason": FIRST_BUILD_REASON}
    body = json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1, "params": params}).encode()
    request = urllib.request.Request(api + "forceschedulers/force", data=body,
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=HTTP_TIMEOUT) as r:
        answer = json.load(r)
    if "result" not in answer:
        raise ValueError(answer.get("error", answer))
    return (f"first build: the flake's current commit on main, started by itself on this new state "
            f"(buildset {answer['result'][0]}); watch it in the web UI; its jobs are listed here when it "
            f"ends"), answer["result"][0]


def first_build_line(setup: LocalSetup, password: str) -> tuple[str, int] | None:
    """The first build, or a warning that it could not be started (the CI still runs)."""
    try:
        return start_first_build(setup, password)
    except (OSError, ValueError, KeyError, StopIteration) as e:
        print(f"redox-ci local: could not start the first build ({e}); force one from the web UI",
              file=sys.stderr)
        return None


def summary(setup: LocalSetup, password: str, cache: CacheWiring, substituter: str, web: bool,
            first: str | None) -> str:
    lines = [f"redox-ci local: {'running' if web else 'prepared'}; state in {setup.state}"
             + (" (Ctrl-C stops it all)" if web else "")]
    lines.append(f"  web UI: {setup.url}  (log in as admin / {password} to force builds)" if web else
                 f"  web UI: not started (--prepare-only); the admin password is {password}")
    if first:
        lines.append(f"  {first}")
    lines += [f"  flake repository: {setup.repo} (commit to it and a build starts within {LOCAL_POLL_SECONDS} s)",
              f"  binary cache: {substituter}; to use it, add to nix.conf:",
              f"    extra-substituters = {substituter}",
              f"    extra-trusted-public-keys = {cache.public_key}"]
    return "\n".join(lines)


def check_settings(setup: LocalSetup) -> None:
    """The checks the master makes of its settings and secrets, made here so that a bad
    file is our sentence before the master starts."""
    from .secrets_file import load_secrets
    from .settings_file import load
    load_secrets(load(setup.settings_file))


class Workers:
    """``buildbot-worker start --nodaemon`` per slot, as the worker user under root (a
    separate process, as on a worker host); none for a LocalWorker inside the master."""

    def __init__(self, setup: LocalSetup):
        self.setup = setup
        self.procs: list[subprocess.Popen] = []

    def start(self, password: str) -> None:
        workers = create_workers(self.setup, password)
        for wdir in workers.dirs:
            with open(wdir / "console.log", "wb") as console:
                self.procs.append(spawn(start_argv(wdir, foreground=True), stdout=console,
                                        stderr=subprocess.STDOUT, **workers.popen_kwargs()))

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, WORKER_STOP_SECONDS)


def run(setup: LocalSetup, s3_port: int, prepare_only: bool = False, first_build: bool = True) -> int:
    from .cache.localserver import LocalS3Server
    s3 = LocalS3Server(state_dir=setup.state / "s3", port=s3_port, host=setup.interface)
    master = Master(setup)
    workers = Workers(setup)
    worker_password = secrets.token_urlsafe(16) if setup.worker_kind == "remote" else None
    print(f"redox-ci local: {'preparing' if prepare_only else 'starting'} in {setup.state} "
          f"(S3 server{'' if prepare_only else ', master, worker'})", flush=True)
    try:
        s3.start()
        key_file, public_key = signing_key(setup.state / "keys")
        setup.cache = CacheWiring(s3.url, s3.bucket, key_file, public_key, s3.credentials)
        password = prepare(setup, worker_password=worker_password)
        check_settings(setup)
        if prepare_only:
            print(summary(setup, password, setup.cache, s3.substituter, web=False, first=None), flush=True)
            return 0
        master.start()
        if worker_password:
            workers.start(worker_password)
        master.wait_ready()
        started = first_build_line(setup, password) if first_build else None
        print(summary(setup, password, setup.cache, s3.substituter, web=True, first=started and started[0]),
              flush=True)
        if started:
            # Each job's result and the VM test images' tests, one by one, when the build ends.
            firstbuild.watch(setup.url, started[1])
        return master.wait()
    finally:
        # A second Ctrl-C must not cut the stop short and leave a process behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        master.stop()
        workers.stop()
        s3.stop()


def run_local(args) -> int:
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise UsageError(f"cannot start: {' and '.join(missing)} not found on PATH; ./run.sh installs what is "
                         "missing (scripts/install.sh) and puts Nix on PATH (scripts/nix-env.sh)")
    state = Path(args.state_dir).resolve()
    repo = Path(args.flake_repo).resolve() if args.flake_repo else state / "redox-flake"
    if args.flake_repo and not (repo / ".git").exists():
        raise UsageError(f"--flake-repo {repo}: not a git repository (clone the flake there first)")
    state.mkdir(parents=True, exist_ok=True)
    lock = lock_instance(state / LOCK_FILE, f"another instance with state in {state}")
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Under root the worker is a process of the unprivileged worker user, as on a worker
        # host; otherwise a LocalWorker inside the master, running as the user.
        setup = LocalSetup(state=state, repo=repo, www_port=args.port, pb_port=args.pb_port,
                           worker_kind="remote" if worker_account() else "local",
                           worker_capabilities=local_capabilities(),
                           worker_emulated_systems=emulated_here(FOREIGN_SYSTEMS))
        check_ports(setup, args.s3_port)
        return run(setup, args.s3_port, prepare_only=args.prepare_only, first_build=not args.no_first_build)
    except Stopped as e:
        print(f"redox-ci local: stopped ({e})", file=sys.stderr)
        return 128 + e.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.close()
