"""One reproducibility run: evaluate once, compare each attribute, write the report.

The flake is evaluated once (``redox_ci.flake``) for the derivation and output paths
of every package of the system; a wrong reference, system or attribute is a usage
error before anything is built. Attributes are then compared one after the other:
each comparison is a build, and a worker's cores go to that build.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import flake, names, nix
from ..errors import FlakeError, UsageError
from . import report
from .compare import STATUS_BUILD_FAILED, AttrResult, CompareOptions, compare_attr

DEFAULT_SYSTEM = "x86_64-linux"
# The revision of a flake with uncommitted changes: Nix gives none.
DIRTY_REV = "dirty"
# What flake.evaluate says of a package; a failed evaluation is a failed build here.
COMPARED_KINDS = ("package", "eval-error")


@dataclass
class ReproRun:
    flake: str
    rev: str
    date: str
    system: str
    report_dir: Path
    started_at: str
    finished_at: str = ""
    results: list[AttrResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.reproducible for r in self.results)

    def to_json(self) -> dict:
        results = [r.to_json() for r in self.results]
        return {
            "schema": report.SCHEMA_VERSION, "flake": self.flake, "rev": self.rev, "date": self.date,
            "system": self.system, "started_at": self.started_at, "finished_at": self.finished_at,
            "key_prefix": report.key_prefix(self.date, self.rev), "report_dir": str(self.report_dir),
            "ok": self.ok, "counts": report.counts(results), "results": results,
        }


def flake_rev(ref: str) -> str:
    """The commit the reference resolves to, shortened; ``dirty`` for a dirty tree."""
    rev = nix.flake_metadata(flake.check_flake_ref(ref)).revision
    return rev[:report.REV_CHARS] if rev else DIRTY_REV


def check_names(attrs: list[str], system: str) -> None:
    bad = [a for a in attrs if not names.ATTR.fits(a)]
    if bad:
        raise UsageError(f"not attribute names: {', '.join(map(repr, bad))}")
    if not names.SYSTEM.fits(system):
        raise UsageError(f"not a system like 'x86_64-linux': {system!r}")


def packages_of(ref: str, system: str) -> dict[str, dict]:
    """``{attr: info}`` of ``packages.<system>`` from one evaluation."""
    evaluated = flake.evaluate(ref, flake.EvalParams(systems=(system,)))[system]
    packages = evaluated.get("packages")
    if packages is None:
        raise FlakeError(f"{ref} has no packages for system {system!r}")
    return packages


def select(packages: dict[str, dict], attrs: list[str], ref: str, system: str) -> list[str]:
    """The attributes to compare: those asked for (all must exist), or every package.

    An attribute whose evaluation fails stays in: it is reported as a build failure.
    """
    if not attrs:
        found = sorted(a for a, info in packages.items() if info.get("kind") in COMPARED_KINDS)
        if not found:
            raise UsageError(f"{ref}: packages.{system} holds no derivation to compare")
        return found
    missing = [a for a in attrs if a not in packages]
    if missing:
        raise UsageError(f"{ref}: packages.{system} has no attribute {', '.join(map(repr, missing))}; "
                         f"it has: {', '.join(sorted(packages)) or '(none)'}")
    not_drv = [a for a in attrs if packages[a].get("kind") not in COMPARED_KINDS]
    if not_drv:
        raise UsageError(f"{ref}: packages.{system}.{not_drv[0]} is not a derivation")
    return list(dict.fromkeys(attrs))


def unevaluated(attr: str, ref: str, system: str) -> AttrResult:
    """The result for an attribute whose derivation could not be evaluated."""
    installable = f"{ref}#packages.{system}.{attr}"
    return AttrResult(attr, STATUS_BUILD_FAILED, error=(
        f"packages.{system}.{attr} does not evaluate to a derivation; "
        f"`nix eval {installable}.drvPath` shows why"))


def default_report_dir(date: str, rev: str) -> Path:
    return Path("repro-reports") / report.run_name(date, rev)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def run_repro(ref: str, attrs: list[str] | None = None, *, system: str = DEFAULT_SYSTEM,
              report_dir: str | Path | None = None, rev: str | None = None,
              options: CompareOptions = CompareOptions(), date: str | None = None) -> ReproRun:
    """Compare every selected attribute of ``ref`` and write the report; return the run."""
    attrs = list(attrs or [])
    flake.check_flake_ref(ref)
    check_names(attrs, system)
    started = now_utc()
    date = report.check_date(date or started.strftime("%Y-%m-%d"))
    packages = packages_of(ref, system)
    selected = select(packages, attrs, ref, system)
    rev = report.check_rev(rev or flake_rev(ref))
    out = Path(report_dir) if report_dir else default_report_dir(date, rev)
    run = ReproRun(ref, rev, date, system, out.resolve(), started.isoformat(timespec="milliseconds"))
    out.mkdir(parents=True, exist_ok=True)
    for attr in selected:
        info = packages[attr]
        if info.get("kind") != "package" or not info.get("drv"):
            run.results.append(unevaluated(attr, ref, system))
            continue
        outputs = {o["name"]: o["path"] for o in info.get("outputs", [])}
        print(f"redox-ci repro: {attr}: building {info['drv']} twice", file=sys.stderr, flush=True)
        run.results.append(compare_attr(attr, info["drv"], outputs, run.report_dir, options))
    run.finished_at = now_utc().isoformat(timespec="milliseconds")
    report.write_report(run.to_json(), run.report_dir)
    return run
