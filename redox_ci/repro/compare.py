"""Build an attribute a second time and compare the two builds bit for bit.

How: ``nix-store --realise DRV`` makes sure the first build is in the store (built
here, or substituted from the binary cache), then ``nix-store --realise --check
--keep-failed DRV`` builds the derivation again and compares the new output with the
stored one. Why this and not the alternatives:

* ``nix build --rebuild --keep-failed`` runs the same check in Nix 2.8, but exits 1
  for every failure; ``nix-store --realise --check`` exits 100 + a bit mask, where
  bit 4 is "not deterministic", so a build failure is told from a difference without
  parsing messages. It also takes the ``.drv`` from the one evaluation of the run,
  instead of evaluating the flake again for every attribute.
* Two builds on two workers compared by NAR hash is stronger (another kernel, host
  name, clock) but needs two workers and the whole closure built twice. Here only
  the checked derivation is rebuilt, its dependencies are reused; and when the first
  copy came from the binary cache, it was built by another worker anyway.
* ``--keep-failed`` keeps the differing copy at ``<out>.check`` next to the stored
  output, which is what the file list and diffoscope need. Nix stops at the first
  differing output, so of a multi-output derivation one output is reported.

The kept build directory goes to a scratch ``TMPDIR`` that is removed afterwards;
the ``.check`` copy is removed after diffoscope unless asked to keep it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..build import check_drv, realise_command
from ..errors import NixError
from ..nix import nix_env, shorten_error, strip_ansi
from .diffoscope import DIFFOSCOPE, DiffoscopeReport, run_diffoscope
from .tree import Difference, diff_trees, scan_tree

CHECK_SUFFIX = ".check"
# nix-store --realise exits with 100 + a bit mask when builds fail; bit 4 means
# "a --check build was not deterministic" (Nix manual, nix-store --realise).
NIX_BUILD_FAILURE_BASE = 100
NONDETERMINISTIC_BIT = 4
DIFFERS_RE = re.compile(r"output '(/nix/store/[^']+)' differs from '(/nix/store/[^']+)'")
# Differing files listed per attribute in the summary; a rebuilt toolchain can differ
# in thousands, and diffoscope's report has them all.
MAX_LISTED_DIFFERENCES = 200
# Lines of a failed build's log quoted in the report: the compiler's error and Nix's
# "builder failed" line are at the end.
FAILURE_TAIL_LINES = 15

STATUS_REPRODUCIBLE = "reproducible"
STATUS_UNREPRODUCIBLE = "unreproducible"
STATUS_BUILD_FAILED = "build-failed"


@dataclass(frozen=True)
class CompareOptions:
    """How to compare: where diffoscope is, its bounds, whether to keep the copy."""

    diffoscope: str = DIFFOSCOPE
    diffoscope_timeout: float = 600
    max_report_bytes: int = 20 * 1024 * 1024
    keep_check: bool = False


@dataclass
class AttrResult:
    """The verdict on one attribute, with the evidence."""

    attr: str
    status: str
    drv: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> store path
    hashes: dict[str, dict] = field(default_factory=dict)  # output -> {"first", "second"}
    differences: list[dict] = field(default_factory=list)
    differences_total: int = 0
    diffoscope: list[DiffoscopeReport] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def reproducible(self) -> bool | None:
        """True or False once compared; None when there was nothing to compare."""
        if self.status == STATUS_BUILD_FAILED:
            return None
        return self.status == STATUS_REPRODUCIBLE

    def to_json(self) -> dict:
        return {
            "attr": self.attr, "reproducible": self.reproducible, "status": self.status,
            "hashes": self.hashes, "differences": self.differences,
            "differences_total": self.differences_total,
            "diffoscope": [d.to_json() for d in self.diffoscope],
            "drv": self.drv, "outputs": self.outputs, "error": self.error, "seconds": self.seconds,
        }


def check_command(drv: str) -> list[str]:
    return ["nix-store", "--realise", "--check", "--keep-failed", check_drv(drv)]


def path_info_command(paths: list[str]) -> list[str]:
    return ["nix", "path-info", "--json", *paths]


def hash_path_command(path: str) -> list[str]:
    # SRI form, the form `nix path-info --json` gives narHash in, so the two compare.
    return ["nix", "hash", "path", "--type", "sha256", "--sri", path]


def is_nondeterministic(returncode: int) -> bool:
    bits = returncode - NIX_BUILD_FAILURE_BASE
    return 0 < bits < NIX_BUILD_FAILURE_BASE and bool(bits & NONDETERMINISTIC_BIT)


def differing_outputs(stderr: str) -> dict[str, str]:
    """``{stored path: differing copy}`` as Nix names them in its error."""
    return dict(DIFFERS_RE.findall(stderr))


def log_tail(stderr: str, lines: int = FAILURE_TAIL_LINES) -> str:
    """The end of a build log, where the compiler and Nix say why it failed."""
    return "\n".join(strip_ansi(stderr).strip().splitlines()[-lines:]) or "(no output)"


def _run(argv: list[str], tmpdir: str | None = None) -> subprocess.CompletedProcess:
    env = nix_env({**os.environ, "TMPDIR": tmpdir} if tmpdir else None)
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise NixError(f"{argv[0]} not found; install Nix (Debian: apt-get install nix-bin)") from None


def _build(argv: list[str], tmpdir: str) -> subprocess.CompletedProcess:
    """Run a build; its log goes on to our stderr (the step's log), stdout stays JSON."""
    proc = _run(argv, tmpdir)
    sys.stderr.write(proc.stderr)
    sys.stderr.flush()
    return proc


def nix_output(argv: list[str], what: str) -> str:
    proc = _run(argv)
    if proc.returncode != 0:
        raise NixError(f"{what} failed:\n{shorten_error(proc.stderr)}")
    return proc.stdout


def nar_hashes(paths: list[str]) -> dict[str, str]:
    """narHash of each valid store path, as the store recorded it."""
    infos = json.loads(nix_output(path_info_command(paths), "nix path-info"))
    return {info["path"]: info["narHash"] for info in infos if info.get("narHash")}


def hash_path(path: str) -> str:
    """The NAR hash of any path, also one the store does not know (the .check copy)."""
    return nix_output(hash_path_command(path), f"hashing {path}").strip()


def remove_copy(path: str) -> None:
    """Remove a ``.check`` copy: store files are read-only, so make dirs writable first."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_dir() and not p.is_symlink():
        for dirpath, _, _ in os.walk(p):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _explain(result: AttrResult, name: str, first: str, second: str, report_dir: Path,
             options: CompareOptions) -> None:
    result.hashes[name]["second"] = hash_path(second)
    found: list[Difference] = diff_trees(scan_tree(first), scan_tree(second))
    result.differences_total += len(found)
    room = MAX_LISTED_DIFFERENCES - len(result.differences)
    result.differences += [{"output": name, **d.to_json()} for d in found[:max(room, 0)]]
    result.diffoscope.append(run_diffoscope(
        first, second, report_dir, attr=result.attr, output=name, timeout=options.diffoscope_timeout,
        max_report_bytes=options.max_report_bytes, binary=options.diffoscope))


def compare_attr(attr: str, drv: str, outputs: dict[str, str], report_dir: Path,
                 options: CompareOptions = CompareOptions()) -> AttrResult:
    """Build ``drv`` if needed, build it again, and judge the two builds."""
    start = time.monotonic()
    result = AttrResult(attr, STATUS_BUILD_FAILED, drv=drv, outputs=dict(outputs))
    scratch = tempfile.mkdtemp(prefix="redox-ci-repro-")
    try:
        first = _build(realise_command(drv), scratch)
        if first.returncode != 0:
            result.error = "the build failed:\n" + log_tail(first.stderr)
            return result
        stored = nar_hashes(list(outputs.values()))
        result.hashes = {name: {"first": stored.get(path), "second": None} for name, path in outputs.items()}
        for path in outputs.values():
            remove_copy(path + CHECK_SUFFIX)
        second = _build(check_command(drv), scratch)
        if second.returncode == 0:
            result.status = STATUS_REPRODUCIBLE
            for h in result.hashes.values():
                h["second"] = h["first"]  # Nix compared them and found them identical
            return result
        if not is_nondeterministic(second.returncode):
            result.error = "the second build failed:\n" + log_tail(second.stderr)
            return result
        result.status = STATUS_UNREPRODUCIBLE
        named = differing_outputs(second.stderr)
        by_path = {path: name for name, path in outputs.items()}
        for path, copy in named.items():
            if path in by_path and os.path.lexists(copy):
                _explain(result, by_path[path], path, copy, report_dir, options)
        if not result.diffoscope:
            result.error = ("Nix found the builds different but kept no copy to compare:\n"
                            + log_tail(second.stderr))
        return result
    except NixError as e:
        # A Nix query failing (store trouble) spoils this attribute, not the whole night.
        result.status, result.error = STATUS_BUILD_FAILED, f"comparing failed: {e}"
        return result
    finally:
        if not options.keep_check:
            for path in outputs.values():
                remove_copy(path + CHECK_SUFFIX)
        shutil.rmtree(scratch, ignore_errors=True)
        result.seconds = round(time.monotonic() - start, 3)
