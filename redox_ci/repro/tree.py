"""Which files differ between two builds of one output, and how.

Nix only says "output X differs from X.check". To name the culprit, both trees are
read into manifests (one entry per path: kind, permission bits, SHA-256 of the
content or the symlink target) and the manifests are compared. Reading is kept apart
from comparing, so the comparison is a pure function that is tested on plain data.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

# Files are hashed in pieces of this size so that a multi-gigabyte disk image is never
# held in memory at once; 1 MiB keeps the number of read calls low.
HASH_CHUNK_BYTES = 1 << 20
ROOT = "."


EntryKind = Literal["file", "dir", "symlink", "other"]
# How the second build of a path differs from the first.
DifferenceKind = Literal["added", "removed", "type", "content", "mode", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One path of an output tree, as far as reproducibility is concerned."""

    kind: EntryKind
    mode: int = 0  # permission bits only; the Nix store keeps 0444/0555 and 0555 dirs
    size: int = 0
    sha256: str | None = None  # files only
    target: str | None = None  # symlinks only


@dataclass(frozen=True)
class Difference:
    """One way in which the second build of ``path`` is not the first."""

    path: str  # relative to the output, "." for the output itself
    kind: DifferenceKind
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path) -> Entry:
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return Entry("symlink", mode, target=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return Entry("dir", mode)
    if stat.S_ISREG(st.st_mode):
        return Entry("file", mode, size=st.st_size, sha256=_sha256(path))
    return Entry("other", mode)


def scan_tree(root: str | os.PathLike) -> dict[str, Entry]:
    """Every path under ``root`` (a directory, a file or a symlink), never following links."""
    root = Path(root)
    manifest = {ROOT: _entry(root)}
    if manifest[ROOT].kind != "dir":
        return manifest
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            manifest[full.relative_to(root).as_posix()] = _entry(full)
    return manifest


def _short(sha: str | None) -> str:
    return (sha or "")[:16]


def diff_entries(path: str, a: Entry, b: Entry) -> list[Difference]:
    """How entry ``b`` (second build) differs from ``a`` (first build) at ``path``."""
    if a.kind != b.kind:
        return [Difference(path, "type", f"{a.kind} -> {b.kind}")]
    found = []
    if a.kind == "symlink" and a.target != b.target:
        found.append(Difference(path, "symlink", f"-> {a.target} became -> {b.target}"))
    if a.kind == "file" and a.sha256 != b.sha256:
        found.append(Difference(
            path, "content",
            f"{a.size} bytes sha256:{_short(a.sha256)} -> {b.size} bytes sha256:{_short(b.sha256)}"))
    if a.mode != b.mode and a.kind != "symlink":
        found.append(Difference(path, "mode", f"{a.mode:04o} -> {b.mode:04o}"))
    return found


def diff_trees(first: dict[str, Entry], second: dict[str, Entry]) -> list[Difference]:
    """Every difference between two manifests, sorted by path.

    A path below a directory that exists in only one build is listed too: each added
    or removed file is a file someone will look for by name.
    """
    found: list[Difference] = []
    for path in sorted(first.keys() | second.keys()):
        a, b = first.get(path), second.get(path)
        if a is None:
            found.append(Difference(path, "added", f"only in the second build ({b.kind})"))
        elif b is None:
            found.append(Difference(path, "removed", f"only in the first build ({a.kind})"))
        else:
            found.extend(diff_entries(path, a, b))
    return found
