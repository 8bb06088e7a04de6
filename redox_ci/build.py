"""Build one planned job and judge its tests.

The plan names the derivation; building that exact ``.drv`` keeps the pipeline to one
evaluation. On a worker whose store lacks it (another host than the evaluator), the
derivation is instantiated from the flake again and must come out the same path.
Tests are judged from the build log that Nix keeps, so a package built earlier, or
whose check phase hid a failure, is judged all the same.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass

from . import nix
from .cargo import judge, parse_test_output
from .errors import NixError, UsageError
from .flake import check_flake_ref

DRV_RE = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+\.drv$")
# A failed build's reason quotes the end of its log, where Nix and the builder say why.
FAILURE_TAIL_LINES = 15


def check_drv(drv: str) -> str:
    if not DRV_RE.match(drv):
        raise UsageError(f"not a derivation path: {drv!r} (expected /nix/store/<hash>-<name>.drv)")
    return drv


def realise_command(drv: str) -> list[str]:
    return ["nix-store", "--realise", "--no-gc-warning", check_drv(drv)]


def outputs_command(drv: str) -> list[str]:
    return ["nix-store", "--query", "--outputs", check_drv(drv)]


def invalid_paths_command(paths: list[str]) -> list[str]:
    return ["nix-store", "--check-validity", "--print-invalid", *paths]


def read_log_command(drv: str) -> list[str]:
    return ["nix-store", "--read-log", check_drv(drv)]


def instantiate_command(flake: str, system: str, attr: str, force_checks: bool) -> list[str]:
    override = 'p.overrideAttrs (_: { doCheck = true; })' if force_checks else "p"
    return ["nix", "eval", "--raw", f"{check_flake_ref(flake)}#packages.{system}.{attr}",
            "--apply", f"p: ({override}).drvPath"]


@dataclass
class BuildResult:
    attr: str
    system: str
    drv: str
    status: str  # "success" | "failed"
    reason: str
    outputs: list[str]
    built_here: bool
    checks: bool
    checks_forced: bool
    tests: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)


def derivation_outputs(drv: str, flake: str | None, system: str, attr: str, force_checks: bool) -> list[str]:
    """The outputs of ``drv``; instantiated from the flake first when this store lacks it.

    Asking for the outputs is also the presence check: one ``nix-store`` process on
    every job, instead of one to check and one to ask.
    """
    query = subprocess.run(outputs_command(drv), env=nix.nix_env(), capture_output=True, text=True)
    if query.returncode == 0:
        return query.stdout.split()
    if not flake:
        raise UsageError(f"{drv} is not in this worker's store; pass --flake to instantiate it here")
    got = nix.run(instantiate_command(flake, system, attr, force_checks),
                  what=f"instantiating {attr}").stdout.strip()
    if got != drv:
        raise NixError(f"{attr}: this worker evaluates to {got}, the plan said {drv}; "
                       "the evaluation differs between hosts (impure flake or different Nix)")
    return nix.run(outputs_command(drv), what="querying outputs").stdout.split()


def build(drv: str, *, attr: str, system: str, checks: bool, checks_forced: bool = False,
          flake: str | None = None) -> BuildResult:
    """Realise ``drv`` with Nix's log on our stderr; judge tests when ``checks``."""
    outputs = derivation_outputs(check_drv(drv), flake, system, attr, checks_forced)
    invalid = nix.run(invalid_paths_command(outputs), what="checking outputs").stdout.split()
    sys.stderr.flush()
    proc = subprocess.run(realise_command(drv), env=nix.nix_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    sys.stderr.flush()
    result = BuildResult(attr, system, drv, "success", "built" if invalid else "already built",
                         outputs, bool(invalid), checks, checks_forced)
    if proc.returncode != 0:
        tail = "\n".join(nix.strip_ansi(proc.stderr).strip().splitlines()[-FAILURE_TAIL_LINES:])
        result.status, result.reason = "failed", f"build failed (exit {proc.returncode}):\n{tail}"
        return result
    if checks:
        log = subprocess.run(read_log_command(drv), env=nix.nix_env(), capture_output=True, text=True)
        if log.returncode != 0:
            result.reason = "tests not judged: no build log here (the output was substituted)"
            return result
        counts = parse_test_output(log.stdout)
        verdict = judge(counts, build_succeeded=True)
        result.tests = {**asdict(counts), "ok": verdict.ok, "summary": verdict.reason}
        result.reason = verdict.reason
        if not verdict.ok:
            result.status = "failed"
    return result
