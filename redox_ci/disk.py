"""The worker's disk: enough free space before a build, garbage-collection roots after it.

A build that fills the store's file system dies half-way with an error that blames the
package. Checking the free space first makes it a clear "not built: disk: 3.1 GiB free on
/nix/store, 20 GiB needed", a result apart from build failures (the master shows it as an
exception of the worker, not of the code).

The outputs of the default branch's builds are kept from ``nix-store --gc`` by roots, one
directory per job (``<roots>/<system>.<attr>/<output name>``, symlinks into the store that
the daemon registers as indirect roots). The next build of that job replaces them, so an
output lives until a newer build of its attribute supersedes it. Other branches and forced
builds make no roots: their outputs go at the next collection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import nix
from .errors import UsageError

# The real flake's toolchains and disk images take several GiB per build and more while
# they build (unpacked sources, intermediate objects): 20 GiB leaves room for one.
DEFAULT_MIN_FREE_GIB = 20.0
# The path whose file system is checked: the store's.
DEFAULT_DISK_PATH = nix.STORE_DIR
# A redox-ci directory of the worker user's own (XDG state), beside nothing else.
DEFAULT_GC_ROOTS = "~/.local/state/redox-ci/gcroots"
GIB = 1024 ** 3


@dataclass(frozen=True)
class DiskSpace:
    path: str
    free_gib: float
    needed_gib: float

    @property
    def enough(self) -> bool:
        return self.free_gib >= self.needed_gib

    @property
    def reason(self) -> str:
        return (f"disk: {self.free_gib:.1f} GiB free on {self.path}, {self.needed_gib:g} GiB needed "
                "([workers].min_free_gib)")


def free_space(path: str, needed_gib: float) -> DiskSpace:
    """The space left to an unprivileged user on ``path``'s file system."""
    try:
        st = os.statvfs(path)
    except FileNotFoundError:
        raise UsageError(f"disk check: {path} does not exist ([workers].disk_path)") from None
    except OSError as e:
        raise UsageError(f"disk check: cannot read the free space of {path}: {e.strerror}") from None
    return DiskSpace(path, st.f_bavail * st.f_frsize / GIB, needed_gib)


def roots_dir(roots: str | os.PathLike, system: str, attr: str) -> Path:
    """The directory of one job's roots (``roots`` may start with ``~``)."""
    return Path(os.path.expanduser(str(roots))) / f"{system}.{attr}"


def root_name(out_path: str) -> str:
    """A root's name: the output's store name without its hash (``cookbook``, ``cookbook-dev``)."""
    return Path(out_path).name.split("-", 1)[1]


def keep_outputs(roots: str | os.PathLike, system: str, attr: str, outputs: list[str]) -> list[str]:
    """Root ``outputs`` under the job's directory, replacing its earlier roots; the root paths.

    The new roots are made before the old ones go, so the job's outputs are never left
    without a root in between.
    """
    job_dir = roots_dir(roots, system, attr)
    job_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for out in outputs:
        root = job_dir / root_name(out)
        nix.add_root(root, out)
        made.append(root)
    for old in job_dir.iterdir():
        if old not in made and old.is_symlink():
            old.unlink()
    return [str(r) for r in made]
