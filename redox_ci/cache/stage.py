"""Staging: sign paths and let Nix write them as a binary cache in a local directory.

Nix knows the narinfo format, NAR serialisation and compression; redox-ci only moves the
files. ``nix copy`` can exit 0 after a write it did not finish, so the staged directory
is checked (every narinfo present, its NAR present with the promised size, our
signature on it) before a single byte is uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .. import nix
from ..nix import PathInfo
from .errors import NotInStore, StagingError
from .narinfo import NarInfo, NarInfoError, is_store_path, narinfo_name, parse_narinfo

# xz and zstd compress in parallel threads, worth it for the large NARs of a toolchain.
PARALLEL_COMPRESSION = {"xz", "zstd"}


@dataclass(frozen=True)
class StagedPath:
    store_path: str
    narinfo_file: Path
    nar_file: Path
    info: NarInfo


@dataclass(frozen=True)
class Staged:
    root: Path
    paths: list[StagedPath]

    @property
    def cache_info(self) -> Path:
        return self.root / "nix-cache-info"


def check_store_paths(paths: list[str]) -> None:
    bad = [p for p in paths if not is_store_path(p)]
    if bad:
        raise NotInStore(f"not a Nix store path: {', '.join(bad)} (expected /nix/store/<hash>-<name>)")


def stage_url(directory: Path, compression: str, key_file: Path | None = None) -> str:
    """The staging binary cache; with ``key_file`` it signs every narinfo it writes (the
    store's ``secret-key``), so the local store's paths need no signature of their own."""
    url = f"file://{directory}?compression={compression}"
    if compression in PARALLEL_COMPRESSION:
        url += "&parallel-compression=true"
    if key_file is not None:
        url += f"&secret-key={quote(str(key_file), safe='/')}"
    return url


def closure(paths: list[str]) -> dict[str, PathInfo]:
    """Every path the given store paths need, with size and references; NotInStore names a missing one."""
    check_store_paths(paths)
    try:
        infos = nix.path_info(paths, recursive=True)
    except nix.InvalidPath as e:
        raise NotInStore(f"{e.path} is not in the local Nix store (build or substitute it first)") from None
    return {p: info for p, info in infos.items() if info is not None}


def check_staged(root: Path, paths: list[str], key_name: str) -> list[StagedPath]:
    """What ``nix copy`` wrote for ``paths``, or StagingError listing every gap."""
    problems, staged = [], []
    for path in paths:
        narinfo_file = root / narinfo_name(path)
        try:
            info = parse_narinfo(narinfo_file.read_text())
        except FileNotFoundError:
            problems.append(f"{path}: no {narinfo_file.name} written")
            continue
        except NarInfoError as e:
            problems.append(f"{path}: {narinfo_file.name} is malformed: {e}")
            continue
        nar_file = root / info.url
        if info.store_path != path:
            problems.append(f"{path}: {narinfo_file.name} describes {info.store_path}")
        elif not nar_file.is_file():
            problems.append(f"{path}: NAR {info.url} missing")
        elif info.file_size is not None and nar_file.stat().st_size != info.file_size:
            problems.append(f"{path}: NAR {info.url} has {nar_file.stat().st_size} bytes, "
                            f"narinfo says {info.file_size}")
        elif not info.signed_by(key_name):
            problems.append(f"{path}: not signed by key {key_name!r}")
        else:
            staged.append(StagedPath(path, narinfo_file, nar_file, info))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise StagingError(f"nix copy did not stage every path:\n  {shown}{more}")
    return staged


def stage(paths: list[str], key_file: Path, key_name: str, root: Path, compression: str) -> Staged:
    """Write ``paths`` as a binary cache under ``root``, signed with ``key_file``: one ``nix
    copy`` (the staging store signs; no ``nix store sign`` into the local store first).

    Nix refuses to add a path to a binary cache unless its references are there too: the
    caller puts the narinfos of references the bucket already holds into ``root`` first.
    """
    root.mkdir(parents=True, exist_ok=True)
    if not paths:
        return Staged(root, [])
    nix.copy_to(stage_url(root, compression, Path(key_file).resolve()), paths, what="nix copy to the staging directory",
                error=StagingError)
    return Staged(root, check_staged(root, paths, key_name))

