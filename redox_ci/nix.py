"""Nix, for every supported version: each command line redox-ci runs, how it is run, and a
typed reading of everything Nix prints that redox-ci uses.

The other modules take their argv builders, runners and parsers from here and keep only
their own logic: nothing else spawns ``nix`` or ``nix-store`` or reads their output. The
master half builds argv here too (``nix-store --realise`` of the boot images, run on the
worker); it runs no Nix itself.

Versions: Nix >= 2.18 is supported (the locked nixpkgs needs it to evaluate), 2.26 is
tested, against captures of its real output in ``tests/data/nix/2.26/``. Nix 2.8 (Debian
12) keeps working where that costs no code; when a Nix command fails and the Nix found is
older than 2.18, the error says so. Where versions differ, it is handled here:

* ``nix path-info --json``: up to 2.18 a list of objects that carry ``path`` (an invalid
  path is ``{"path": ..., "valid": false}``); from 2.19 an object keyed by store path whose
  values lack ``path`` and are ``null`` for an invalid path (and the command exits 0).
  With ``--recursive``, an invalid path fails the command in both.
* ``nix-store --realise`` exits 100 + a bit mask with a local store, but 1 for every
  failure through the daemon (``NIX_REMOTE=daemon``, any multi-user install): the daemon
  protocol does not carry the status. A ``--check`` rebuild that differs is then known
  only by Nix's message, which every version words alike.
* ``nix derivation show``: ``inputDrvs`` values are lists of output names before the
  dynamic derivations work (2.18) and ``{"outputs": [...], "dynamicOutputs": {}}`` since;
  both are read.
* ``nix build --json``: ``startTime``/``stopTime`` only for what that call built (2.26).
* ``nix flake metadata --json``: a dirty tree has ``dirtyRevision`` and no ``revision``.
* ``REF#.``: a fragment starting with ``.`` is an absolute attribute path (no
  ``packages.<system>`` prefix is tried), so ``.`` alone is the flake's outputs; an empty
  fragment means ``packages.<system>.default`` instead.
* An evaluation error prints ``error:``, then trace frames (``… while ...``, ``at FILE:L:C``)
  and, last, ``error: <message>``. Without ``--show-trace`` the frames may stop short of the
  flake's own files; with it, the last frame in the flake's source is the throw.
* Out of address space (``ulimit -v``), the evaluator prints ``error: out of memory`` (and
  Boehm GC's ``GC Warning: Out of Memory!``), or dies of a signal.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import NixError, RedoxCIError, UsageError

FLAKE_FEATURES = "experimental-features = nix-command flakes"
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# Enough of an evaluation error to see the cause and the position, short enough for a
# step summary or a terminal.
ERROR_TAIL_LINES = 12
# A failed build's reason quotes the end of its log, where the builder and Nix say why.
BUILD_LOG_TAIL_LINES = 15
# An evaluation error's message in a plan's reason: one or two lines of it.
EVAL_MESSAGE_CHARS = 300
MIN_VERSION = (2, 18)
INSTALL_HINT = "install Nix >= 2.18 (scripts/install.sh, the Nix installer, or NixOS)"

STORE_DIR = "/nix/store"
DRV_RE = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+\.drv$")
VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
# `nix path-info --recursive` (and other store queries) on a path the store lacks.
NOT_VALID_RE = re.compile(r"path '(/nix/store/[^']+)' is not valid")
# A --check rebuild that came out different; with --keep-failed Nix names the copy.
DIFFERS_RE = re.compile(r"output '(/nix/store/[^']+)' differs from '(/nix/store/[^']+)'")
# nix-store --realise's failing status with a local store: 0x60 | bits (Nix's
# Worker::failingExitStatus): 0x04 the build failed, 0x01 timed out, 0x02 hash
# mismatch, 0x08 a --check build was not deterministic. So 100, 101, 102, 104, ...
BUILD_STATUS_BASE = 0x60
NOT_DETERMINISTIC_BIT = 0x08
# The flake's outputs as an installable: REF#. (see the module's docstring).
OUTPUTS_FRAGMENT = "."
# A position in a flake's source as Nix prints it, "/nix/store/<hash>-source/flake.nix:22:21".
SOURCE_POS_RE = re.compile(r"^at /nix/store/[0-9a-z]{32}-[^/]+/(\S+:\d+:\d+):?$")
OUT_OF_MEMORY_RE = re.compile(r"error: out of memory|Out of Memory!|std::bad_alloc|Cannot allocate memory")


# ---------------------------------------------------------------- environment, errors

def nix_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with flakes enabled, keeping any NIX_CONFIG the caller set."""
    env = dict(os.environ if base is None else base)
    config = env.get("NIX_CONFIG", "")
    if "experimental-features" not in config:
        env["NIX_CONFIG"] = (config + "\n" + FLAKE_FEATURES).strip()
    return env


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def shorten_error(stderr: str, max_lines: int = ERROR_TAIL_LINES) -> str:
    """The useful part of a Nix error: from the first 'error:' on, trace noise dropped."""
    lines = [line.rstrip() for line in strip_ansi(stderr).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("error:"):
            lines = lines[i:]
            break
    lines = [line for line in lines if "(use '--show-trace'" not in line]
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines) or "(no output)"


def log_tail(stderr: str, lines: int = BUILD_LOG_TAIL_LINES) -> str:
    """The end of a build's log, where the compiler and Nix say why it failed."""
    return "\n".join(strip_ansi(stderr).strip().splitlines()[-lines:]) or "(no output)"


# ---------------------------------------------------------------- version

def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from ``nix --version``: the last version on its line, so
    "nix (Nix) 2.26.3", "nix (Lix, like Nix) 2.91.1" and "nix (Determinate Nix 3.6.2)
    2.29.0" all read as the Nix version."""
    found = VERSION_RE.findall(text.strip().splitlines()[0] if text.strip() else "")
    if not found:
        return None
    major, minor, patch = found[-1]
    return int(major), int(minor), int(patch or 0)


def version_argv() -> list[str]:
    return ["nix", "--version"]


@functools.cache
def nix_version() -> tuple[int, int, int] | None:
    """The version of the ``nix`` on PATH (asked once per process); None if it cannot say."""
    try:
        proc = subprocess.run(version_argv(), capture_output=True, text=True, env=nix_env(),
                              stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(proc.stdout) if proc.returncode == 0 else None


def version_problem(version: tuple[int, int, int] | None) -> str | None:
    """Why ``version`` is not supported, or None when it is (or is unknown)."""
    if version is None or version[:2] >= MIN_VERSION:
        return None
    found = ".".join(map(str, version))
    return f"this is Nix {found}, older than 2.18, the oldest redox-ci supports; {INSTALL_HINT}"


# ---------------------------------------------------------------- running

def _not_found(argv: Sequence[str], what: str, error: type[RedoxCIError]) -> RedoxCIError:
    return error(f"{what}: {argv[0]} not found; {INSTALL_HINT}")


def _failed(what: str, stderr: str, error: type[RedoxCIError]) -> RedoxCIError:
    """The error of a failed Nix command; under a Nix older than 2.18 it says so too."""
    too_old = version_problem(nix_version())
    return error(f"{what} failed:\n{shorten_error(stderr)}" + (f"\n({too_old})" if too_old else ""))


def run(argv: Sequence[str], *, what: str, error: type[RedoxCIError] = NixError,
        input: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a Nix command, returning its output or raising ``error`` with a short message."""
    proc = run_status(argv, what=what, error=error, input=input, timeout=timeout)
    if proc.returncode != 0:
        raise _failed(what, proc.stderr, error)
    return proc


def run_status(argv: Sequence[str], *, what: str, error: type[RedoxCIError] = NixError,
               input: str | None = None, timeout: float | None = None,
               memory_mb: int | None = None) -> subprocess.CompletedProcess:
    """Run a Nix command and return its output and exit status, whatever the status: for a
    command whose failure is an answer (a path not there, no log). Raises ``error`` only
    when Nix is missing or the command timed out. ``memory_mb`` caps the command's address
    space (RLIMIT_AS, as ``ulimit -v``): the evaluator runs in this process, builds it asks
    for run in the daemon."""
    limit = None
    if memory_mb:
        limit = functools.partial(_limit_address_space, memory_mb * 1024 * 1024)
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, errors="replace", env=nix_env(),
                              input=input, timeout=timeout, preexec_fn=limit,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise _not_found(argv, what, error) from None
    except subprocess.TimeoutExpired:
        raise error(f"{what}: timed out after {timeout:.0f} s") from None


def _limit_address_space(size: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def run_streaming(argv: Sequence[str], *, what: str, tmpdir: str | None = None) -> subprocess.CompletedProcess:
    """Run a build: its log goes on to our stderr line by line as Nix prints it (the step's
    live log) and is kept for the caller, stdout is kept; the exit status is returned,
    never raised. ``tmpdir`` is the TMPDIR of the command (a local store builds there)."""
    env = nix_env({**os.environ, "TMPDIR": tmpdir} if tmpdir else None)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    except FileNotFoundError:
        raise _not_found(argv, what, NixError) from None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    err = []
    for line in proc.stderr:
        err.append(line)
        sys.stderr.write(line)
        sys.stderr.flush()
    reader.join()
    returncode = proc.wait()
    return subprocess.CompletedProcess(list(argv), returncode, "".join(out), "".join(err))


# ---------------------------------------------------------------- argv builders

def _operands(values: Sequence[str], what: str) -> list[str]:
    """Values passed as operands: never one Nix could take for an option."""
    bad = [v for v in values if not v or v.startswith("-")]
    if bad:
        raise UsageError(f"not a {what}: {bad[0]!r}")
    return list(values)


def _store_paths(paths: Sequence[str]) -> list[str]:
    bad = [p for p in paths if not p.startswith(STORE_DIR + "/")]
    if bad:
        raise UsageError(f"not a Nix store path: {bad[0]!r} (expected {STORE_DIR}/<hash>-<name>)")
    return list(paths)


def check_drv(drv: str) -> str:
    if not DRV_RE.match(drv):
        raise UsageError(f"not a derivation path: {drv!r} (expected /nix/store/<hash>-<name>.drv)")
    return drv


def eval_json_argv(installable: str, apply: str | None = None, *, show_trace: bool = False) -> list[str]:
    """``nix eval --json``; the flake's lock file is never written (it is not ours).
    ``show_trace``: the whole trace, down to the position of an error in the flake."""
    return ["nix", "eval", "--json", "--no-write-lock-file", *(["--show-trace"] if show_trace else []),
            *_operands([installable], "flake installable"),
            *(["--apply", apply] if apply is not None else [])]


def eval_raw_argv(installable: str, apply: str | None = None) -> list[str]:
    return ["nix", "eval", "--raw", "--no-write-lock-file", *_operands([installable], "flake installable"),
            *(["--apply", apply] if apply is not None else [])]


def outputs_installable(ref: str) -> str:
    """The installable of a flake's whole outputs (``REF#.``), for one evaluation of several."""
    return f"{ref}#{OUTPUTS_FRAGMENT}"


def config_show_argv(name: str) -> list[str]:
    """One setting's value (Nix >= 2.20; 2.18 and 2.19 have ``show_config_argv``)."""
    return ["nix", "config", "show", *_operands([name], "setting name")]


def show_config_argv() -> list[str]:
    """Every setting as ``name = value`` lines (older name, still there in 2.26)."""
    return ["nix", "show-config"]


def flake_metadata_argv(ref: str) -> list[str]:
    return ["nix", "flake", "metadata", "--json", "--no-write-lock-file", *_operands([ref], "flake reference")]


def path_info_argv(paths: Sequence[str], *, recursive: bool = False) -> list[str]:
    return ["nix", "path-info", "--json", *(["--recursive"] if recursive else []), *_store_paths(paths)]


def derivation_show_argv(installables: Sequence[str], *, recursive: bool = False) -> list[str]:
    return ["nix", "derivation", "show", *(["--recursive"] if recursive else []),
            *_operands(installables, "derivation or installable")]


def build_json_argv(installables: Sequence[str]) -> list[str]:
    return ["nix", "build", "--no-link", "--json", *_operands(installables, "installable")]


def realise_argv(drv: str) -> list[str]:
    """Build (or substitute) one planned derivation."""
    return ["nix-store", "--realise", "--no-gc-warning", check_drv(drv)]


def realise_paths_argv(paths: Sequence[str]) -> list[str]:
    """Make store paths present (built or substituted), e.g. the images a boot test needs."""
    return ["nix-store", "--realise", *_store_paths(paths)]


def check_rebuild_argv(drv: str) -> list[str]:
    """Build ``drv`` again and compare with the stored outputs; ``--keep-failed`` keeps a
    differing copy at ``<out>.check``."""
    return ["nix-store", "--realise", "--check", "--keep-failed", check_drv(drv)]


def add_root_argv(root: Path, path: str) -> list[str]:
    """Keep ``path`` from garbage collection by the symlink ``root`` (an indirect root: the
    daemon registers it, so the worker user may make it); an existing root is replaced."""
    return ["nix-store", "--add-root", *_operands([str(root)], "root path"), "--realise", *_store_paths([path])]


def query_outputs_argv(drv: str) -> list[str]:
    return ["nix-store", "--query", "--outputs", check_drv(drv)]


def read_log_argv(drv: str) -> list[str]:
    return ["nix-store", "--read-log", check_drv(drv)]


def hash_path_argv(path: str) -> list[str]:
    # SRI form, the form `nix path-info --json` gives narHash in, so the two compare.
    return ["nix", "hash", "path", "--type", "sha256", "--sri", *_operands([path], "path")]


def copy_argv(url: str, paths: Sequence[str]) -> list[str]:
    # --no-recursive: the caller chose exactly the paths to copy.
    return ["nix", "copy", "--no-recursive", "--to", *_operands([url], "store URL"), *_store_paths(paths)]


def generate_secret_argv(name: str) -> list[str]:
    return ["nix", "key", "generate-secret", "--key-name", *_operands([name], "key name")]


def convert_to_public_argv() -> list[str]:
    return ["nix", "key", "convert-secret-to-public"]


# ---------------------------------------------------------------- parsers

def parse_json(text: str, *, what: str, error: type[RedoxCIError] = NixError) -> Any:
    """The JSON a ``--json`` command printed, or ``error`` quoting the start of what it printed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise error(f"{what}: nix printed no JSON: {text[:200]!r}") from None


def eval_message(stderr: str, max_chars: int = EVAL_MESSAGE_CHARS) -> str:
    """What an evaluation error says, for a reason: its last ``error:`` message (after the
    trace) and where the throw is, e.g. ``does not evaluate on purpose (flake.nix:22:21)``."""
    lines = [line.strip() for line in strip_ansi(stderr).splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if not starts:
        return shorten_error(stderr, 2)[:max_chars]
    message, where = [], None
    for line in lines[starts[-1]:]:
        if line.startswith("at "):  # the message's own position, then the source around it
            where = m.group(1) if (m := SOURCE_POS_RE.match(line)) else None
            break
        if not line or line.startswith("…") or "(use '--show-trace'" in line:
            break
        message.append(line)
    text = " ".join(message).removeprefix("error:").strip() or "(no message)"
    where = where or next((m.group(1) for line in reversed(lines[:starts[-1]])
                           if (m := SOURCE_POS_RE.match(line))), None)
    if where and where not in text:
        text += f" ({where})"
    return text if len(text) <= max_chars else text[:max_chars - 1] + "…"


def out_of_memory(proc: subprocess.CompletedProcess) -> bool:
    """Whether a command run with ``memory_mb`` ran out of it (its message, or a signal)."""
    return proc.returncode < 0 or bool(OUT_OF_MEMORY_RE.search(proc.stderr or ""))


def parse_config_value(text: str, name: str | None = None) -> list[str]:
    """A list setting as ``nix config show NAME`` prints it (words on one line), or, with
    ``name``, its line in the ``name = value`` listing of ``nix show-config``."""
    if name is None:
        return text.split()
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() == name:
            return value.split()
    return []


def parse_paths(text: str) -> list[str]:
    """Store paths printed one a line (``nix-store --realise``, ``--query --outputs``,
    ``--check-validity --print-invalid``)."""
    return text.split()


@dataclass(frozen=True)
class PathInfo:
    """A valid store path as ``nix path-info --json`` describes it."""

    path: str
    nar_hash: str  # SRI, "sha256-..."
    nar_size: int
    references: tuple[str, ...] = ()  # full store paths
    signatures: tuple[str, ...] = ()
    deriver: str | None = None
    ca: str | None = None

    @classmethod
    def from_json(cls, path: str, info: Mapping[str, Any]) -> PathInfo:
        return cls(path=path, nar_hash=info.get("narHash") or "", nar_size=int(info.get("narSize") or 0),
                   references=tuple(info.get("references") or ()),
                   signatures=tuple(info.get("signatures") or ()),
                   deriver=info.get("deriver"), ca=info.get("ca"))


def parse_path_info(text: str) -> dict[str, PathInfo | None]:
    """``{store path: PathInfo, or None if the store lacks it}`` from either shape:
    the list of objects with ``path`` (Nix <= 2.18) or the object keyed by path (>= 2.19)."""
    data = parse_json(text, what="nix path-info")
    if isinstance(data, list):  # <= 2.18
        return {e["path"]: PathInfo.from_json(e["path"], e) if e.get("valid", True) else None for e in data}
    if isinstance(data, dict):  # >= 2.19
        return {p: PathInfo.from_json(p, e) if e is not None else None for p, e in data.items()}
    raise NixError(f"nix path-info: unexpected JSON: {text[:200]!r}")


def parse_not_valid(stderr: str) -> str | None:
    """The store path a failed store query names as not valid, if it names one."""
    m = NOT_VALID_RE.search(strip_ansi(stderr))
    return m.group(1) if m else None


@dataclass(frozen=True)
class Derivation:
    """A store derivation as ``nix derivation show`` prints it."""

    path: str
    name: str
    system: str
    builder: str
    args: tuple[str, ...]
    outputs: dict[str, str | None]  # output name -> path (None: content-addressed, unknown)
    input_drvs: dict[str, tuple[str, ...]]  # derivation -> the outputs used
    input_srcs: tuple[str, ...]
    env: dict[str, str]


def _input_outputs(value: Any) -> tuple[str, ...]:
    # Old Nix: ["out"]; 2.26: {"outputs": ["out"], "dynamicOutputs": {}}.
    return tuple(value.get("outputs", ()) if isinstance(value, dict) else value)


def parse_derivations(text: str) -> dict[str, Derivation]:
    """``{drv path: Derivation}`` from ``nix derivation show`` (the 2.26 shape)."""
    data = parse_json(text, what="nix derivation show")
    if not isinstance(data, dict):
        raise NixError(f"nix derivation show: unexpected JSON: {text[:200]!r}")
    return {path: Derivation(
        path=path, name=d.get("name") or d.get("env", {}).get("name", ""), system=d["system"],
        builder=d["builder"], args=tuple(d.get("args", ())),
        outputs={name: o.get("path") for name, o in d.get("outputs", {}).items()},
        input_drvs={drv: _input_outputs(v) for drv, v in d.get("inputDrvs", {}).items()},
        input_srcs=tuple(d.get("inputSrcs", ())), env=dict(d.get("env", {})),
    ) for path, d in data.items()}


@dataclass(frozen=True)
class Built:
    """One entry of ``nix build --json``."""

    drv: str
    outputs: dict[str, str]
    # Epoch seconds, only for what this call built (2.26 leaves them out for the rest).
    start_time: int | None = None
    stop_time: int | None = None


def parse_build_json(text: str) -> list[Built]:
    data = parse_json(text, what="nix build")
    if not isinstance(data, list):
        raise NixError(f"nix build: unexpected JSON: {text[:200]!r}")
    return [Built(e["drvPath"], dict(e.get("outputs", {})), e.get("startTime"), e.get("stopTime")) for e in data]


@dataclass(frozen=True)
class FlakeMetadata:
    """What ``nix flake metadata --json`` says of a reference."""

    url: str  # the locked URL
    revision: str | None  # the commit, None for a dirty tree or a source without one
    dirty_revision: str | None  # "<rev>-dirty" for a dirty git tree (Nix 2.26)
    last_modified: int | None
    store_path: str | None
    description: str | None


def parse_flake_metadata(text: str) -> FlakeMetadata:
    meta = parse_json(text, what="nix flake metadata")
    locked = meta.get("locked") or {}
    return FlakeMetadata(
        url=meta.get("url") or meta.get("resolvedUrl") or "",
        revision=meta.get("revision") or locked.get("rev"),
        dirty_revision=meta.get("dirtyRevision") or locked.get("dirtyRev"),
        last_modified=meta.get("lastModified"), store_path=meta.get("path"),
        description=meta.get("description"))


class Rebuild(StrEnum):
    """What a ``nix-store --realise --check`` rebuild found."""

    SAME = "same"  # rebuilt bit for bit identical to the stored outputs
    DIFFERS = "differs"  # rebuilt, and an output came out different
    FAILED = "failed"  # the rebuild did not finish (build error, missing input, ...)


@dataclass(frozen=True)
class RebuildCheck:
    verdict: Rebuild
    # {stored output: differing copy}, as Nix names them (the copy exists with --keep-failed)
    differing: dict[str, str] = field(default_factory=dict)
    returncode: int = 0
    log: str = ""


def differing_outputs(stderr: str) -> dict[str, str]:
    """``{stored path: differing copy}`` as Nix names them in its error."""
    return dict(DIFFERS_RE.findall(strip_ansi(stderr)))


def not_deterministic_status(returncode: int) -> bool:
    """A local store's exit status says a --check build was not deterministic."""
    return (returncode & ~0x0F) == BUILD_STATUS_BASE and bool(returncode & NOT_DETERMINISTIC_BIT)


def rebuild_verdict(returncode: int, stderr: str) -> RebuildCheck:
    """Judge a ``--check`` rebuild by its exit status or, through the daemon (always 1),
    by Nix's "may not be deterministic: output '...' differs" message."""
    differing = differing_outputs(stderr)
    if returncode == 0:
        verdict = Rebuild.SAME
    elif not_deterministic_status(returncode) or (returncode == 1 and differing):
        verdict = Rebuild.DIFFERS
    else:
        verdict = Rebuild.FAILED
    return RebuildCheck(verdict, differing if verdict is Rebuild.DIFFERS else {}, returncode, stderr)


# ---------------------------------------------------------------- commands

class InvalidPath(NixError):
    """A store path the local store does not hold."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def path_info(paths: Sequence[str], *, recursive: bool = False) -> dict[str, PathInfo | None]:
    """Path infos of ``paths`` (with ``recursive``, of their closure). Without
    ``recursive`` a path the store lacks maps to None; with it, InvalidPath names it."""
    if not paths:
        return {}
    proc = run_status(path_info_argv(paths, recursive=recursive), what="nix path-info")
    if proc.returncode != 0:
        missing = parse_not_valid(proc.stderr)
        if missing:
            raise InvalidPath(f"{missing} is not valid in the local Nix store", missing)
        raise _failed("nix path-info", proc.stderr, NixError)
    return parse_path_info(proc.stdout)


def hash_path(path: str) -> str:
    """The SRI NAR hash of any path, also one the store does not know (a ``.check`` copy)."""
    return run(hash_path_argv(path), what=f"hashing {path}").stdout.strip()


def flake_metadata(ref: str, *, error: type[RedoxCIError] = NixError) -> FlakeMetadata:
    return parse_flake_metadata(run(flake_metadata_argv(ref), what=f"reading the metadata of {ref}",
                                    error=error).stdout)


def eval_json(installable: str, *, apply: str | None = None, what: str,
              error: type[RedoxCIError] = NixError, timeout: float | None = None) -> Any:
    proc = run(eval_json_argv(installable, apply), what=what, error=error, timeout=timeout)
    return parse_json(proc.stdout, what=what, error=error)


def eval_json_status(installable: str, *, apply: str | None = None, what: str,
                     error: type[RedoxCIError] = NixError, timeout: float | None = None,
                     memory_mb: int | None = None, show_trace: bool = False) -> subprocess.CompletedProcess:
    """``nix eval --json`` whose failure is an answer (the caller reads ``eval_message``);
    raises ``error`` only for a missing Nix or the timeout."""
    return run_status(eval_json_argv(installable, apply, show_trace=show_trace), what=what, error=error,
                      timeout=timeout, memory_mb=memory_mb)


def extra_platforms() -> list[str]:
    """The systems this host's Nix builds besides its own (``extra-platforms``: emulated ones)."""
    proc = run_status(config_show_argv("extra-platforms"), what="nix config show")
    if proc.returncode == 0:
        return parse_config_value(proc.stdout)
    proc = run_status(show_config_argv(), what="nix show-config")
    return parse_config_value(proc.stdout, "extra-platforms") if proc.returncode == 0 else []


def eval_raw(installable: str, *, apply: str | None = None, what: str,
             error: type[RedoxCIError] = NixError) -> str:
    return run(eval_raw_argv(installable, apply), what=what, error=error).stdout.strip()


def query_outputs(drv: str, *, missing_ok: bool = True) -> list[str] | None:
    """The output paths of ``drv``; None when this store lacks the derivation and
    ``missing_ok``, else NixError with Nix's reason."""
    proc = run_status(query_outputs_argv(drv), what="querying outputs")
    if proc.returncode == 0:
        return parse_paths(proc.stdout)
    if missing_ok:
        return None
    raise _failed("querying outputs", proc.stderr, NixError)


def read_log(drv: str) -> str | None:
    """The build log Nix kept for ``drv``, or None (substituted, collected, never built here)."""
    proc = run_status(read_log_argv(drv), what="reading the build log")
    return proc.stdout if proc.returncode == 0 else None


def add_root(root: Path, path: str) -> None:
    run(add_root_argv(root, path), what=f"keeping {path} from garbage collection")


def realise(drv: str, *, tmpdir: str | None = None) -> subprocess.CompletedProcess:
    """Build or substitute ``drv``, its log streamed to our stderr; returns the exit status."""
    return run_streaming(realise_argv(drv), what=f"building {drv}", tmpdir=tmpdir)


def check_rebuild(drv: str, *, tmpdir: str | None = None) -> RebuildCheck:
    """Build ``drv`` again (its outputs must be present) and compare, log streamed to our stderr."""
    proc = run_streaming(check_rebuild_argv(drv), what=f"rebuilding {drv}", tmpdir=tmpdir)
    return rebuild_verdict(proc.returncode, proc.stderr)


def copy_to(url: str, paths: Sequence[str], *, what: str, error: type[RedoxCIError] = NixError) -> None:
    run(copy_argv(url, paths), what=what, error=error)


def generate_secret_key(name: str, *, error: type[RedoxCIError] = NixError) -> str:
    return run(generate_secret_argv(name), what="nix key generate-secret", error=error).stdout


def public_key(secret: str, *, error: type[RedoxCIError] = NixError) -> str:
    return run(convert_to_public_argv(), what="nix key convert-secret-to-public", error=error,
               input=secret).stdout.strip()
