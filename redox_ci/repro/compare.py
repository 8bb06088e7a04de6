"""Build an attribute a second time and compare the two builds bit for bit.

How: ``nix-store --realise DRV`` makes sure the first build is in the store (built
here, or substituted from the binary cache), then ``nix-store --realise --check
--keep-failed DRV`` builds the derivation again and compares the new output with the
stored one. Why this and not the alternatives:

* ``nix build --rebuild --keep-failed`` runs the same check, but needs an installable:
  ``nix-store --realise --check`` takes the ``.drv`` from the one evaluation of the
  run, instead of evaluating the flake again for every attribute. With a local store
  it also exits 100 + a bit mask that tells a difference from a build failure;
  through the Nix daemon (every multi-user install) it exits 1 for both, and Nix's
  "output ... differs from ..." message tells them apart (``redox_ci.nix``).
* Two builds on two workers compared by NAR hash is stronger (another kernel, host
  name, clock) but needs two workers and the whole closure built twice. Here only
  the checked derivation is rebuilt, its dependencies are reused; and when the first
  copy came from the binary cache, it was built by another worker anyway.
* ``--keep-failed`` keeps the differing copy at ``<out>.check`` next to the stored
  output, which is what the file list and diffoscope need. Nix stops at the first
  differing output, so of a multi-output derivation one output is reported.

With a local store the kept build directory goes to a scratch ``TMPDIR`` that is
removed afterwards; the daemon keeps it in its own temporary directory, out of our
reach. The ``.check`` copy is removed after diffoscope unless asked to keep it, where
the worker may remove it (``remove_copy``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .. import nix
from ..errors import NixError
from .diffoscope import DIFFOSCOPE, DiffoscopeReport, run_diffoscope
from .tree import Difference, diff_trees, scan_tree

CHECK_SUFFIX = ".check"
# Differing files listed per attribute in the summary; a rebuilt toolchain can differ
# in thousands, and diffoscope's report has them all.
MAX_LISTED_DIFFERENCES = 200

STATUS_REPRODUCIBLE = "reproducible"
STATUS_UNREPRODUCIBLE = "unreproducible"
STATUS_BUILD_FAILED = "build-failed"
ReproStatus = Literal["reproducible", "unreproducible", "build-failed"]


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
    status: ReproStatus
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


def nar_hashes(paths: list[str]) -> dict[str, str]:
    """narHash of each valid store path, as the store recorded it."""
    return {path: info.nar_hash for path, info in nix.path_info(paths).items() if info and info.nar_hash}


def remove_copy(path: str) -> bool:
    """Remove a ``.check`` copy if we may: store files are read-only, so make dirs writable
    first. The daemon's copy belongs to root; a worker user cannot remove it and leaves it
    (Nix replaces it at the next check of that derivation, the garbage collector removes
    it). Returns whether the copy is gone."""
    p = Path(path)
    try:
        if p.is_dir() and not p.is_symlink():
            for dirpath, _, _ in os.walk(p):
                os.chmod(dirpath, 0o755)
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    except PermissionError:
        return False
    return not os.path.lexists(p)


def _explain(result: AttrResult, name: str, first: str, second: str, report_dir: Path,
             options: CompareOptions) -> None:
    result.hashes[name]["second"] = nix.hash_path(second)
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
        first = nix.realise(drv, tmpdir=scratch)
        if first.returncode != 0:
            result.error = "the build failed:\n" + nix.log_tail(first.stderr)
            return result
        stored = nar_hashes(list(outputs.values()))
        result.hashes = {name: {"first": stored.get(path), "second": None} for name, path in outputs.items()}
        for path in outputs.values():
            remove_copy(path + CHECK_SUFFIX)
        second = nix.check_rebuild(drv, tmpdir=scratch)
        if second.verdict is nix.Rebuild.SAME:
            result.status = STATUS_REPRODUCIBLE
            for h in result.hashes.values():
                h["second"] = h["first"]  # Nix compared them and found them identical
            return result
        if second.verdict is nix.Rebuild.FAILED:
            result.error = "the second build failed:\n" + nix.log_tail(second.log)
            return result
        result.status = STATUS_UNREPRODUCIBLE
        by_path = {path: name for name, path in outputs.items()}
        for path, copy in second.differing.items():
            if path in by_path and os.path.lexists(copy):
                _explain(result, by_path[path], path, copy, report_dir, options)
        if not result.diffoscope:
            result.error = ("Nix found the builds different but kept no copy to compare:\n"
                            + nix.log_tail(second.log))
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
