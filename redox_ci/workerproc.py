"""Worker processes for the local default and the tests: one ``buildbot-worker`` per slot,
run as the unprivileged worker user when root starts them.

That is how a worker host runs them (``workers/redox-ci-worker.service``, ``User=redox-ci``):
the worker builds through the Nix daemon, which trusts that user to sign paths for the
binary cache, and nothing a build step runs is root. The user reaches the flake repository
and the state directory only because this module opens them to it (the cache's signing key
comes from the master, a file of its own for each push); started by anyone else, the
workers run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .local import LocalSetup

# Made by scripts/nix-setup.sh (and workers/create-worker.sh on a worker host).
WORKER_USER = "redox-ci"


def worker_account() -> pwd.struct_passwd | None:
    """The account worker processes run as: the worker user when we are root, else None
    (they run as whoever starts them)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(WORKER_USER)
    except KeyError:
        raise UsageError(f"there is no user {WORKER_USER!r} for the worker to run as; "
                         "scripts/install.sh makes it") from None


def closed_to_others(path: Path) -> Path | None:
    """The first directory above ``path`` that other users cannot enter, if any."""
    return next((p for p in path.parents if not p.stat().st_mode & 0o001), None)


def open_to_others(path: Path, stop_at: Path = Path("/tmp")) -> None:
    """Let other users read ``path`` and enter the directories above it, up to ``stop_at``
    (pytest's and mkdtemp's directories are 0700)."""
    for p in [path, *path.parents]:
        if p == stop_at or p == Path(p.anchor):
            break
        mode = p.stat().st_mode
        if mode & 0o005 != 0o005:
            p.chmod(mode | 0o005)


@dataclass
class WorkerProcesses:
    """The slots' directories and how to run ``buildbot-worker`` for them."""

    dirs: list[Path]
    home: Path
    env: dict[str, str]
    account: dict[str, Any] = field(default_factory=dict)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, cwd=self.home, **self.account, **kwargs)

    def popen_kwargs(self) -> dict[str, Any]:
        """For ``processes.spawn``: the worker's environment, directory and account."""
        return {"env": self.env, "cwd": self.home, **self.account}


def start_argv(worker_dir: Path, foreground: bool = False) -> list[str]:
    return ["buildbot-worker", "start", *(["--nodaemon"] if foreground else []), str(worker_dir)]


def create_workers(setup: LocalSetup, password: str) -> WorkerProcesses:
    """Create one worker directory per slot of the setup's worker under STATE/workers,
    owned by the account the workers run as, and open to it what they read."""
    from .master.workers import slot_names
    from .config import WorkerSpec
    account = worker_account()
    base = setup.state / "workers"
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    # The flake repository is not the worker user's own; git, and Nix's libgit2 with it,
    # refuse another user's repository unless it is named safe.
    (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {setup.repo}\n")
    env = {**os.environ, "HOME": str(home)}
    as_user: dict[str, Any] = {}
    if account:
        closed = closed_to_others(Path(sys.prefix))
        if closed:
            raise UsageError(f"the worker user {WORKER_USER!r} cannot reach {sys.prefix} ({closed} is closed "
                             "to other users): put redox-ci where other users can read it, e.g. under /srv")
        env.update(USER=account.pw_name, LOGNAME=account.pw_name)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        open_to_others(setup.repo)
        open_to_others(base)
        for p in (base, home, home / ".gitconfig"):
            shutil.chown(p, account.pw_uid, account.pw_gid)
    procs = WorkerProcesses([], home, env, as_user)
    for name in slot_names(WorkerSpec(name=setup.worker_name, max_builds=setup.max_builds)):
        wdir = base / name
        # create-worker keeps an existing buildbot.tac (and so an old password).
        (wdir / "buildbot.tac").unlink(missing_ok=True)
        created = procs.run(["buildbot-worker", "create-worker", "-q", "--umask=0o22", str(wdir),
                             f"{setup.interface}:{setup.pb_port}", name, password],
                            capture_output=True, text=True)
        if created.returncode != 0:
            raise UsageError(f"cannot create the worker {name} in {wdir}: {created.stderr.strip()}")
        procs.dirs.append(wdir)
    return procs
