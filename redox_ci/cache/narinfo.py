"""Narinfo files and store path names: the pure part of a Nix binary cache.

A binary cache is a flat key space: ``<hash>.narinfo`` per store path, pointing at a
compressed NAR under ``nar/``. Knowing a path's narinfo key needs only its name, so
existence checks never touch the NAR. Everything here is pure and unit-tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STORE_DIR = "/nix/store"
# Nix's base-32 alphabet (no e, o, u, t) and a 32-character hash part.
STORE_PATH_RE = re.compile(r"^/nix/store/([0-9a-df-np-sv-z]{32})-([A-Za-z0-9+\-._?=]+)$")
NARINFO_SUFFIX = ".narinfo"
CACHE_INFO_NAME = "nix-cache-info"
# Fields whose value is a space-separated list; Sig may also repeat on several lines.
_LIST_FIELDS = {"References"}
_REQUIRED = ("StorePath", "URL", "NarHash", "NarSize")


class NarInfoError(ValueError):
    """A narinfo text that is not well formed."""


def is_store_path(path: str) -> bool:
    return STORE_PATH_RE.match(path) is not None


def hash_part(store_path: str) -> str:
    """The 32-character hash of ``/nix/store/<hash>-<name>``; ValueError if not a store path."""
    m = STORE_PATH_RE.match(store_path)
    if not m:
        raise ValueError(f"not a Nix store path: {store_path!r}")
    return m.group(1)


def join_key(prefix: str, name: str) -> str:
    """S3 key of ``name`` under ``prefix`` ("" or "a/b", slashes at the ends ignored)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def narinfo_name(store_path: str) -> str:
    return hash_part(store_path) + NARINFO_SUFFIX


def narinfo_key(prefix: str, store_path: str) -> str:
    return join_key(prefix, narinfo_name(store_path))


@dataclass(frozen=True)
class NarInfo:
    store_path: str
    url: str
    nar_hash: str
    nar_size: int
    compression: str = "none"
    file_hash: str | None = None
    file_size: int | None = None
    references: tuple[str, ...] = ()
    deriver: str | None = None
    sigs: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def signed_by(self, key_name: str) -> bool:
        return any(s.split(":", 1)[0] == key_name for s in self.sigs)


def parse_narinfo(text: str) -> NarInfo:
    """Parse the ``Key: value`` lines Nix writes; NarInfoError names what is wrong."""
    values: dict[str, str] = {}
    sigs: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            # "References: " with an empty list may lose its trailing space in transit.
            key, sep, value = line.partition(":")
            if not sep or value.strip():
                raise NarInfoError(f"line {n}: expected 'Key: value', got {line!r}")
        if key == "Sig":
            sigs.append(value.strip())
        elif key in values:
            raise NarInfoError(f"line {n}: {key} given twice")
        else:
            values[key] = value.strip()
    missing = [k for k in _REQUIRED if not values.get(k)]
    if missing:
        raise NarInfoError(f"missing {', '.join(missing)}")
    if not is_store_path(values["StorePath"]):
        raise NarInfoError(f"StorePath is not a store path: {values['StorePath']!r}")
    try:
        nar_size = int(values.pop("NarSize"))
        file_size = int(values["FileSize"]) if "FileSize" in values else None
    except ValueError as e:
        raise NarInfoError(f"size is not a number: {e}") from None
    values.pop("FileSize", None)
    return NarInfo(
        store_path=values.pop("StorePath"),
        url=values.pop("URL"),
        nar_hash=values.pop("NarHash"),
        nar_size=nar_size,
        compression=values.pop("Compression", "none") or "none",
        file_hash=values.pop("FileHash", None),
        file_size=file_size,
        references=tuple(values.pop("References", "").split()),
        deriver=values.pop("Deriver", None) or None,
        sigs=tuple(sigs),
        extra=values,
    )


def format_narinfo(info: NarInfo) -> str:
    """The text Nix would write for ``info``, in Nix's field order."""
    lines = [f"StorePath: {info.store_path}", f"URL: {info.url}", f"Compression: {info.compression}"]
    if info.file_hash:
        lines.append(f"FileHash: {info.file_hash}")
    if info.file_size is not None:
        lines.append(f"FileSize: {info.file_size}")
    lines += [f"NarHash: {info.nar_hash}", f"NarSize: {info.nar_size}",
              f"References: {' '.join(info.references)}"]
    if info.deriver:
        lines.append(f"Deriver: {info.deriver}")
    lines += [f"Sig: {s}" for s in info.sigs]
    lines += [f"{k}: {v}" for k, v in info.extra.items()]
    return "\n".join(lines) + "\n"
