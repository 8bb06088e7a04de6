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

from dataclasses import asdict, dataclass, field
from typing import Literal

from . import nix
from .cargo import judge, parse_test_output
from .errors import NixError, UsageError
from .flake import check_flake_ref


BuildStatus = Literal["success", "failed"]


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

    def to_json(self) -> dict:
        return asdict(self)


def derivation_outputs(drv: str, flake: str | None, system: str, attr: str, force_checks: bool,
                       output: str = "packages") -> list[str]:
    """The outputs of ``drv``; instantiated from the flake first when this store lacks it.

    Asking for the outputs is also the presence check: one ``nix-store`` process on
    every job, instead of one to check and one to ask.
    """
    outputs = nix.query_outputs(drv)
    if outputs is not None:
        return outputs
    if not flake:
        raise UsageError(f"{drv} is not in this worker's store; pass --flake to instantiate it here")
    override = "p.overrideAttrs (_: { doCheck = true; })" if force_checks else "p"
    got = nix.eval_raw(f"{check_flake_ref(flake)}#{output}.{system}.{attr}", apply=f"p: ({override}).drvPath",
                       what=f"instantiating {attr}")
    if got != drv:
        raise NixError(f"{attr}: this worker evaluates to {got}, the plan said {drv}; "
                       "the evaluation differs between hosts (impure flake or different Nix)")
    return nix.query_outputs(drv, missing_ok=False)


UNAVAILABLE = "tests wanted but cannot be turned on: the package has no overrideAttrs (its doCheck stays off)"


def build(drv: str, *, attr: str, system: str, checks: bool, checks_forced: bool = False,
          flake: str | None = None, output: str = "packages", checks_unavailable: bool = False) -> BuildResult:
    """Realise ``drv`` with Nix's log streamed to our stderr; judge tests when ``checks``."""
    outputs = derivation_outputs(nix.check_drv(drv), flake, system, attr, checks_forced, output)
    invalid = nix.invalid_paths(outputs)
    proc = nix.realise(drv)
    result = BuildResult(attr, system, drv, "success", "built" if invalid else "already built",
                         outputs, bool(invalid), checks, checks_forced)
    if proc.returncode != 0:
        result.status, result.reason = "failed", f"build failed (exit {proc.returncode}):\n{nix.log_tail(proc.stderr)}"
        return result
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
