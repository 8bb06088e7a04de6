"""Processes that ``redox-ci local`` starts: one instance per state directory, ports
checked before use, children that die with their parent and stop with their group.

Linux only, as the rest of the local default: the lock is ``flock``, the port holder
is found through ``/proc``, and a child asks the kernel for ``SIGTERM`` when its
parent dies, so that even a ``kill -9`` of ``redox-ci local`` leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import IO

from .errors import UsageError

# prctl(2) option: the signal a process receives when its parent thread exits.
PR_SET_PDEATHSIG = 1
# /proc/net/tcp's state column for a listening socket.
TCP_LISTEN = "0A"


def lock_instance(path: Path, what: str) -> IO[str]:
    """Hold an exclusive lock on ``path`` for as long as the returned file stays open.

    The kernel drops the lock when this process ends, however it ends; a second
    holder is refused with the first one's pid.
    """
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise UsageError(f"{what} is already running (pid {pid}); stop it first (Ctrl-C where it runs)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command name) of the processes listening on TCP ``port``, as far as this
    process may see them (other users' processes need root; other network namespaces
    are not seen)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = []
    for proc in Path("/proc").iterdir() if inodes else ():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                holders.append((int(proc.name), (proc / "comm").read_text().strip()))
        except OSError:  # gone, or not ours to look at
            continue
    return sorted(holders)


def port_problem(host: str, port: int) -> str | None:
    """Why ``port`` on ``host`` cannot be listened on now (a phrase to follow "port N on
    HOST"), or None if it can.

    Binds as Twisted and the S3 server do (SO_REUSEADDR), so a port held only by
    connections closing (TIME_WAIT) counts as free, as it is for them.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return taken(port) if e.errno == errno.EADDRINUSE else f"cannot be listened on: {e.strerror}"
    return None


def taken(port: int) -> str:
    """The port is in use: by whom, where that can be known."""
    holders = ", ".join(f"pid {pid}, {name}" for pid, name in port_holders(port))
    return f"is taken by another program ({holders})" if holders else "is taken by another program"


def die_with_parent():
    """A ``preexec_fn``: the child gets SIGTERM when the process that starts it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took hold
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start a child in a process group of its own (a Ctrl-C at the terminal reaches only
    us, and we stop children in order) that dies with us."""
    return subprocess.Popen(argv, process_group=0, preexec_fn=die_with_parent(),
                            stdin=subprocess.DEVNULL, **kwargs)


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; then whatever the child left in
    its process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
