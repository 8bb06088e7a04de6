"""Build one planned job and judge its tests.

The plan names the derivation; building that exact ``.drv`` keeps the pipeline to one
evaluation. On a worker whose store lacks it (another host than the evaluator), the
derivation is instantiated from the flake again and must come out the same path.
Tests are judged from the build log that Nix keeps, so a package built earlier, or
whose check phase hid a failure, is judged all the same. A build that succeeds with
something to look at (no test ran, tests that cannot be turned on, no log to judge)
succeeds with ``warnings``; the master's step shows them as WARNINGS.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from typing import Literal

from . import nix
from .cargo import judge, parse_test_output
from .errors import NixError, UsageError
from .flake import check_flake_ref


# "not-built": the worker did not try (too little disk, redox_ci.disk), not a failure of the job.
BuildStatus = Literal["success", "failed", "not-built"]


@dataclass
class BuildResult:
    attr: str
    system: str
    drv: str
    status: BuildStatus
    reason: str
    outputs: list[str]
    built_here: bool
    checks: bool
    checks_forced: bool
    tests: dict | None = None
    warnings: list[str] = field(default_factory=list)
    # The garbage-collection roots that keep the outputs (default branch only).
    gc_roots: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def instantiate(drv: str, flake: str | None, system: str, attr: str, force_checks: bool,
                output: str = "packages") -> None:
    """Instantiate ``drv`` from the flake on a worker whose store lacks it; it must come out the same path."""
    if not flake:
        raise UsageError(f"{drv} is not in this worker's store; pass --flake to instantiate it here")
    override = "p.overrideAttrs (_: { doCheck = true; })" if force_checks else "p"
    got = nix.eval_raw(f"{check_flake_ref(flake)}#{output}.{system}.{attr}", apply=f"p: ({override}).drvPath",
                       what=f"instantiating {attr}")
    if got != drv:
        raise NixError(f"{attr}: this worker evaluates to {got}, the plan said {drv}; "
                       "the evaluation differs between hosts (impure flake or different Nix)")


def did_work(stderr: str, drv: str, outputs: list[str]) -> bool:
    """Whether a realisation built or fetched ``drv``'s outputs, from Nix's own list of what
    it is about to do (``this derivation will be built:`` / ``these N paths will be
    fetched``, the paths indented one a line); Nix prints none when every output is valid."""
    named = {drv, *outputs}
    return any(line.strip() in named for line in nix.strip_ansi(stderr).splitlines() if line.startswith("  "))


def realise(drv: str, flake: str | None, system: str, attr: str, force_checks: bool,
            output: str = "packages") -> tuple[subprocess.CompletedProcess, list[str]]:
    """Build ``drv``; instantiated from the flake first when this store lacks it.

    One ``nix-store --realise`` per job on the usual path: its stdout is the outputs and
    its stderr says whether anything was built. Only a failed build asks whether the
    derivation was there at all (the message for a missing one differs across Nix versions).
    Returns the realisation and the outputs.
    """
    proc = nix.realise(drv)
    if proc.returncode == 0:
        return proc, nix.parse_paths(proc.stdout)
    outputs = nix.query_outputs(drv)
    if outputs is not None:
        return proc, outputs
    instantiate(drv, flake, system, attr, force_checks, output)
    proc = nix.realise(drv)
    return proc, nix.parse_paths(proc.stdout) if proc.returncode == 0 else nix.query_outputs(drv, missing_ok=False)


UNAVAILABLE = "tests wanted but cannot be turned on: the package has no overrideAttrs (its doCheck stays off)"


def build(drv: str, *, attr: str, system: str, checks: bool, checks_forced: bool = False,
          flake: str | None = None, output: str = "packages", checks_unavailable: bool = False) -> BuildResult:
    """Realise ``drv`` with Nix's log streamed to our stderr; judge tests when ``checks``."""
    proc, outputs = realise(nix.check_drv(drv), flake, system, attr, checks_forced, output)
    if proc.returncode != 0:
        return BuildResult(attr, system, drv, "failed", f"build failed (exit {proc.returncode}):\n"
                           f"{nix.log_tail(proc.stderr)}", outputs, True, checks, checks_forced)
    built = did_work(proc.stderr, drv, outputs)
    result = BuildResult(attr, system, drv, "success", "built" if built else "already built",
                         outputs, built, checks, checks_forced)
    if checks_unavailable:
        result.reason = UNAVAILABLE
        result.warnings.append(UNAVAILABLE)
    if checks:
        log = nix.read_log(drv)
        if log is None:
            result.reason = "tests not judged: no build log here (the output was substituted)"
            result.warnings.append(result.reason)
            return result
        counts = parse_test_output(log)
        verdict = judge(counts, build_succeeded=True)
        result.tests = {**asdict(counts), "ok": verdict.ok, "summary": verdict.reason}
        result.reason = verdict.reason
        if verdict.warning:
            result.warnings.append(verdict.reason)
        if not verdict.ok:
            result.status = "failed"
    return result
