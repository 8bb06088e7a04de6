"""The boot engine: run a VMM, follow its serial console as it arrives, decide, stop it.

The flake's boot test polls a file once a second, so every verdict is late by up to
a second plus a fixed two-second wait, a panic costs the whole timeout, and a VM can
outlive the script. Here the serial console is a pipe (or FIFO) and the process
exit a pidfd, all waited on with one ``select``: the verdict follows the marker by
the time it takes to read it. What passes is the flake's rule for the image (a
shell after Boot Complete, or a test image's protocol complete), there is one overall
deadline and optional earlier ones per milestone, a panic or the VMM dying ends the
boot at once, and whatever happens (verdict, timeout, exception, a signal to
redox-ci) the VMM's whole process group is stopped before returning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .errors import BootInterrupted, VmmNotFound
from .markers import MILESTONES, SHELL, SUCCESS, Reached, SerialFollower
from .protocol import TestRun, TestsPrefix
from .vmm import VmmCommand

# QEMU and Cloud Hypervisor exit on SIGTERM within milliseconds; a VMM that has not
# gone after this long is killed outright.
STOP_GRACE_S = 3.0
READ_SIZE = 64 * 1024
# Enough of the VMM's own output to see why it died, short enough for a summary.
VMM_TAIL_LINES = 12
# VMM messages after which the guest never runs again (QEMU pauses the VM and waits
# for a monitor command that will never come): fail at once instead of timing out.
VMM_FATAL_MARKERS = ("KVM internal error", "failed to initialize kvm", "kvm run failed")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# After a panic marker the verdict is made, but the VM runs on until the panic line is
# complete (UEFI and serial consoles write a line in pieces, milliseconds apart), for
# at most this long, so the reason quotes the whole line.
PANIC_LINE_GRACE_S = 1.0
PR_SET_PDEATHSIG = 1

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


# What passes: Boot Complete then a shell (the flake's boot test), Boot Complete
# alone, or a test image's protocol complete with no failure.
Goal = Literal["shell", "boot-complete", "tests"]


@dataclass(frozen=True)
class FollowPlan:
    """What passes and how long to wait for it."""

    # Seconds from the start to the verdict (the flake's BOOT_TEST_TIMEOUT; --timeout).
    overall: float
    # Optional earlier limits by milestone name, each counted from the milestone before.
    timeouts: Mapping[str, float] = field(default_factory=dict)
    harmless: tuple[str, ...] = ()
    goal: Goal = "shell"
    # With goal "shell": how long after Boot Complete a shell may take ("partial" after).
    shell_grace: float = 10.0
    # With goal "tests": the protocol's prefix.
    tests_prefix: TestsPrefix | None = None

    def __post_init__(self) -> None:
        if (self.goal == "tests") != (self.tests_prefix is not None):
            raise ValueError("a tests prefix goes with the goal \"tests\", and only with it")


def deadline_for(reached: list[Reached], plan: FollowPlan) -> float:
    """Seconds after the start by which the next thing the plan waits for must come."""
    deadline = plan.overall
    nxt = MILESTONES[len(reached)] if len(reached) < len(MILESTONES) else None
    if nxt is not None and nxt.name in plan.timeouts:
        deadline = min(deadline, (reached[-1].at if reached else 0.0) + plan.timeouts[nxt.name])
    complete = next((r.at for r in reached if r.name == SUCCESS), None)
    if plan.goal == "shell" and complete is not None:
        deadline = min(deadline, complete + plan.shell_grace)
    return deadline


def goal_reached(f: SerialFollower, plan: FollowPlan) -> bool:
    if plan.goal == "tests":
        return f.tests is not None and f.tests.complete
    return f.has(SHELL if plan.goal == "shell" else SUCCESS)


def describe_status(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


Verdict = Literal["pass", "fail"]
# Why a boot failed: a kernel or userspace panic, too late, the VMM gone or failing,
# Boot Complete without a shell ("partial"), a test image's tests failing.
Failure = Literal["panic", "timeout", "vmm-exit", "vmm-error", "no-shell", "tests-failed"]


@dataclass
class BootResult:
    """One boot's outcome; ``to_json`` is what ``redox-ci boot --json`` prints."""

    verdict: Verdict
    reason: str
    milestones: list[dict]       # [{"name", "at"}], seconds after the VMM started
    elapsed: float               # start to VM stopped
    vmm: str
    accel: str | None
    harmless: list[str]
    serial_log: str
    vmm_log: str
    failure: Failure | None = None
    goal: Goal = "shell"
    attr: str | None = None      # the image's attribute, whose rule judged it
    vm: dict | None = None       # {"memory_mb", "cpus", "nic"} of the VM; None for a replay
    shell_reached: bool = False
    tests: TestRun | None = None  # a test image's results, one per test
    vmm_exit: int | None = None  # the VMM's status when it exited by itself
    verdict_after: float = 0.0   # start to verdict
    vmm_pid: int | None = None   # also its process group id; gone when the result exists
    notes: list[str] = field(default_factory=list)
    started: float = field(default=0.0, repr=False)  # time.monotonic() at start; not JSON
    decided: float = field(default=0.0, repr=False)  # time.monotonic() at the verdict; not JSON

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("started")
        data.pop("decided")
        data["tests"] = self.tests.to_json() if self.tests is not None else None
        return data


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child: if redox-ci dies, even by SIGKILL, the kernel kills the VMM too."""
    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # spawned while we hold them off
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return setup


def spawn(command: VmmCommand, stdout: int, stderr: int) -> subprocess.Popen:
    """Start the VMM in its own session and process group, tied to our life."""
    try:
        return subprocess.Popen(
            command.argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
            env=command.env, close_fds=True)
    except FileNotFoundError:
        raise VmmNotFound(f"{command.argv[0]} not found: install it or put it on PATH") from None
    except PermissionError:
        raise VmmNotFound(f"{command.argv[0]} is not executable") from None


@contextmanager
def signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_group(proc: subprocess.Popen, pidfd: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the VMM's process group, SIGKILL what is left, reap the leader.

    Signals to redox-ci are held off meanwhile, so a second Ctrl-C cannot leave a VM.
    The leader is reaped last: until then its pid names the group, and cannot be reused.
    """
    with signals_blocked():
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        select.select([pidfd], [], [], grace)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM, SIGINT and SIGHUP into BootInterrupted, so ``finally`` stops the VM.

    Buildbot interrupts a step by signalling redox-ci; the VM, in its own process
    group, would not get that signal. Only the main thread can set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise BootInterrupted(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _read(fd: int) -> bytes | None:
    """What is there now: bytes, b"" at end of file, None when nothing is ready."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:  # a pty whose other side has gone
            return b""
        raise


def _status(pid: int) -> int:
    """The exit status of an exited child without reaping it (the group stays addressable)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


# How following the console ended.
FollowEnd = Literal["reached", "panic", "fatal", "exit", "timeout"]


class _Session:
    """One VMM run being followed: the file descriptors, the follower, the outcome."""

    def __init__(self, proc: subprocess.Popen, pidfd: int, serial_fd: int, log_fd: int,
                 serial_out, vmm_out, plan: FollowPlan, start: float):
        self.proc, self.pidfd, self.plan, self.start = proc, pidfd, plan, start
        self.serial_out, self.vmm_out = serial_out, vmm_out
        self.follower = SerialFollower(plan.harmless, tests_prefix=plan.tests_prefix)
        self.tail: deque[str] = deque(maxlen=VMM_TAIL_LINES)
        self._log_partial = ""
        self.fatal: str | None = None
        self.exited: int | None = None
        self.exited_at = 0.0
        self.sel = selectors.DefaultSelector()
        self.fds = {serial_fd: self._on_serial, log_fd: self._on_log, pidfd: self._on_exit}
        for fd in self.fds:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)

    def now(self) -> float:
        return time.monotonic() - self.start

    def wait_for(self, done: Callable[[], bool], deadline: Callable[[], float]) -> FollowEnd:
        """Follow output until ``done()`` or an end: "reached", "panic", "fatal", "exit", "timeout"."""
        while True:
            if done():
                return "reached"
            if self.follower.panic is not None:
                return "panic"
            if self.fatal is not None:
                return "fatal"
            if self.exited is not None:
                return "exit"
            remaining = deadline() - self.now()
            if remaining <= 0:
                return "timeout"
            for key, _ in self.sel.select(remaining):
                self.fds[key.fd](key.fd)

    def finish_panic_line(self, grace: float = PANIC_LINE_GRACE_S) -> None:
        end = self.now() + grace
        while not self.follower.panic.complete and self.exited is None and self.fds:
            remaining = end - self.now()
            if remaining <= 0:
                return
            for key, _ in self.sel.select(remaining):
                self.fds[key.fd](key.fd)

    def _take(self, fd: int, log) -> bytes | None:
        """Read what ``fd`` has and keep it in ``log``; None when there is nothing (more)."""
        data = _read(fd)
        if data == b"":
            self._close(fd)
        if not data:
            return None
        log.write(data)
        log.flush()  # the logs can be followed while the VM runs
        return data

    def _on_serial(self, fd: int) -> None:
        data = self._take(fd, self.serial_out)
        if data is not None:
            self.follower.feed(data, self.now())

    def _on_log(self, fd: int) -> None:
        data = self._take(fd, self.vmm_out)
        if data is None:
            return
        text = self._log_partial + data.decode("utf-8", "replace")
        *lines, self._log_partial = text.split("\n")
        for line in lines:
            if line.strip():
                self.tail.append(line.strip())
            if self.fatal is None and any(m in line for m in VMM_FATAL_MARKERS):
                self.fatal = line.strip()

    def _on_exit(self, fd: int) -> None:
        self.drain()
        self.exited = _status(self.proc.pid)
        self.exited_at = self.now()
        self._close(fd)

    def drain(self) -> None:
        """Read what the pipes still hold (a VMM's last words come just before it exits)."""
        for fd, handler in list(self.fds.items()):
            if fd != self.pidfd:
                for _ in range(1024):  # bounded: a grandchild could keep writing forever
                    if fd not in self.fds or _read_ready(fd) is False:
                        break
                    handler(fd)

    def drain_quietly(self) -> None:
        try:
            self.drain()
        except OSError:
            pass

    def _close(self, fd: int) -> None:
        if fd in self.fds:
            self.sel.unregister(fd)
            del self.fds[fd]

    def stderr_tail(self) -> str:
        lines = list(self.tail) + ([self._log_partial.strip()] if self._log_partial.strip() else [])
        return " | ".join(lines[-VMM_TAIL_LINES:]) or "(no output)"


def _read_ready(fd: int) -> bool:
    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)


def _tests_so_far(tests: TestRun | None) -> str:
    if tests is None:
        return ""
    failed = "".join(f"; failed: {c.describe()}" for c in tests.failures)
    return f"; tests so far: {tests.describe()}{failed}"


def _failure_reason(end: FollowEnd, s: _Session, plan: FollowPlan) -> tuple[Failure, str]:
    f = s.follower
    last = f.last()
    where = f"last milestone: {last.name} at {last.at:.2f} s" if last else "no milestone reached"
    nxt = f.next_milestone
    if plan.goal == "tests":
        awaited = f.tests.complete_marker
    else:
        awaited = f"{nxt.name} ({nxt.what})" if nxt else "a verdict"
    partial = plan.goal == "shell" and f.has(SUCCESS)  # the flake's "partial: no shell"
    if end == "panic":
        return "panic", f"{f.panic.kind} panic after {last.name if last else 'start'} " \
                        f"({f.panic.at:.2f} s): {f.panic.line}"
    if end == "fatal":
        return "vmm-error", f"the VMM reported a fatal error ({where}): {s.fatal}"
    if end == "exit":
        if partial:
            return "no-shell", f"partial: no shell: the VMM exited ({describe_status(s.exited)}) " \
                               f"{s.exited_at - _at(f, SUCCESS):.2f} s after Boot Complete; " \
                               f"its output: {s.stderr_tail()}"
        return "vmm-exit", f"the VMM exited ({describe_status(s.exited)}) before {awaited} " \
                           f"({where}){_tests_so_far(f.tests)}; its output: {s.stderr_tail()}"
    if partial:
        complete = _at(f, SUCCESS)
        within = (f"{plan.shell_grace:g} s of Boot Complete" if complete + plan.shell_grace <= plan.overall
                  else f"the overall timeout of {plan.overall:g} s")
        return "no-shell", f"partial: no shell within {within} (Boot Complete at {complete:.2f} s)"
    limit = plan.timeouts.get(nxt.name) if nxt else None
    if limit is not None and (last.at if last else 0.0) + limit < plan.overall:
        return "timeout", f"timed out: no {nxt.name} ({nxt.what}) within {limit:g} s after " \
                          f"{last.name if last else 'start'} ({where})"
    return "timeout", f"timed out: no {awaited} within the overall timeout of {plan.overall:g} s " \
                      f"({where}){_tests_so_far(f.tests)}"


def _judge(end: FollowEnd, s: _Session, plan: FollowPlan) -> tuple[Verdict, Failure | None, str]:
    f = s.follower
    if end != "reached":
        return "fail", *_failure_reason(end, s, plan)
    if plan.goal == "tests":
        t = f.tests
        if t.ok:
            return "pass", None, f"{t.complete_marker} after {t.completed_at:.2f} s: {t.describe()}"
        if t.failures:
            failed = "; ".join(c.describe() for c in t.failures)
            return "fail", "tests-failed", f"{len(t.failures)} of {len(t.cases)} tests failed: " \
                                           f"{failed} ({t.describe()})"
        return "fail", "tests-failed", f"{t.complete_marker} with no test results"
    reason = f"Boot Complete after {_at(f, SUCCESS):.2f} s"
    if plan.goal == "shell":
        reason += f", shell after {_at(f, SHELL):.2f} s"
    return "pass", None, reason


def follow(command: VmmCommand, plan: FollowPlan, serial_log: Path, vmm_log: Path,
           append_vmm_log: bool = False) -> BootResult:
    """Run ``command``, judge its serial console against ``plan``, always stop it."""
    start = time.monotonic()
    with signals_raise(), ExitStack() as stack:
        serial_out = stack.enter_context(open(serial_log, "wb"))
        vmm_out = stack.enter_context(open(vmm_log, "ab" if append_vmm_log else "wb"))
        log_r, log_w = os.pipe()
        stack.callback(_close_quietly, log_r)
        if command.serial_fifo is None:
            serial_r, serial_w = os.pipe()
            stdout, stderr = serial_w, log_w
        else:
            os.mkfifo(command.serial_fifo, 0o600)
            serial_r = os.open(command.serial_fifo, os.O_RDONLY | os.O_NONBLOCK)
            # Our own writer keeps the FIFO from reading as end-of-file before the VMM
            # opens it and after it closes it: its exit is what tells us it has gone.
            stack.callback(_close_quietly, os.open(command.serial_fifo, os.O_WRONLY | os.O_NONBLOCK))
            serial_w = None
            stdout, stderr = log_w, log_w
        stack.callback(_close_quietly, serial_r)
        # No signal may land between the VMM starting and its stop being arranged.
        with signals_blocked():
            try:
                proc = spawn(command, stdout, stderr)
            finally:
                for fd in {log_w, serial_w} - {None}:
                    os.close(fd)
            pidfd = os.pidfd_open(proc.pid)
            stack.callback(os.close, pidfd)
            session = _Session(proc, pidfd, serial_r, log_r, serial_out, vmm_out, plan, start)
            stack.callback(session.drain_quietly)  # after the stop: the VMM's last words
            stack.callback(stop_group, proc, pidfd)
        end = session.wait_for(lambda: goal_reached(session.follower, plan),
                               lambda: deadline_for(session.follower.reached, plan))
        decided = time.monotonic()
        if end == "panic":
            session.finish_panic_line()
    elapsed = time.monotonic() - start
    f = session.follower
    verdict, failure, reason = _judge(end, session, plan)
    return BootResult(
        verdict=verdict, reason=reason,
        milestones=[{"name": r.name, "at": round(r.at, 3)} for r in f.reached],
        elapsed=round(elapsed, 3), vmm=command.vmm, accel=command.accel,
        harmless=list(f.harmless), serial_log=str(serial_log), vmm_log=str(vmm_log),
        failure=failure, goal=plan.goal, shell_reached=f.has(SHELL), tests=f.tests,
        vmm_exit=session.exited, verdict_after=round(decided - start, 3), vmm_pid=proc.pid,
        started=start, decided=decided)


def _at(f: SerialFollower, name: str) -> float:
    return next(r.at for r in f.reached if r.name == name)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
