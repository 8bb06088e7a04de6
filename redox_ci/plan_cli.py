"""``redox-ci plan`` and ``redox-ci build``: the faces of plan.py and build.py."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from .errors import ConfigError, NixError, UsageError
from .outcome import Outcome

# The handlers import the settings (pydantic) and the planner when they run: a job's
# `redox-ci build` needs neither, and it is run once per job.
if TYPE_CHECKING:
    from .plan import Plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="evaluate the flake once and print the jobs")
    p.add_argument("--flake", required=True, help="flake reference, e.g. github:brittonr/nix-redox")
    p.add_argument("--systems", help="comma-separated systems (default: from settings)")
    p.add_argument("--attrs", help="only these attributes (comma or space separated)")
    p.add_argument("--settings", help="settings file (default: $REDOX_CI_SETTINGS, else built-in stages)")
    p.add_argument("--no-cache", action="store_true", help="do not ask the binary cache what it holds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_plan)

    b = sub.add_parser("build", help="build one planned job and judge its tests")
    b.add_argument("--drv", required=True)
    b.add_argument("--attr", required=True)
    b.add_argument("--system", required=True)
    b.add_argument("--checks", action="store_true", help="the package's tests must run and pass")
    b.add_argument("--checks-forced", action="store_true", help="redox-ci turned doCheck on")
    b.add_argument("--checks-unavailable", action="store_true",
                   help="the tests are wanted but cannot be turned on: a warning")
    b.add_argument("--output", default="packages", choices=["packages", "checks"],
                   help="the flake output holding --attr (default: packages)")
    b.add_argument("--flake", help="to instantiate the derivation if this store lacks it")
    b.add_argument("--min-free-gib", type=float, default=None,
                   help="not built (exit 75) when --disk-path has less free space (default 20; 0: no check)")
    b.add_argument("--disk-path", default=None, help="the path whose file system is checked (default /nix/store)")
    b.add_argument("--gc-roots", help="keep the outputs from garbage collection by roots in DIR/SYSTEM.ATTR, "
                                      "replacing the job's earlier roots (the default branch's builds)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=run_build)


def plan_command_line(flake: str, *, settings: str | None = None, systems: list[str] | None = None,
                      attrs: list[str] | None = None, no_cache: bool = False) -> list[str]:
    """The argv after ``redox-ci`` of a ``plan``, as ``register``'s parser reads it back.

    ``--flag=value``: a value that starts with "-" stays a value.
    """
    argv = ["plan", f"--flake={flake}"]
    if settings:
        argv.append(f"--settings={settings}")
    if systems:
        argv.append(f"--systems={','.join(systems)}")
    if attrs:
        argv.append(f"--attrs={' '.join(attrs)}")
    if no_cache:
        argv.append("--no-cache")
    return argv


def build_command_line(drv: str, *, attr: str, system: str, checks: bool = False, checks_forced: bool = False,
                       checks_unavailable: bool = False, output: str = "packages",
                       flake: str | None = None, min_free_gib: float | None = None,
                       disk_path: str | None = None, gc_roots: str | None = None) -> list[str]:
    """The argv after ``redox-ci`` of a ``build``, as ``register``'s parser reads it back."""
    argv = ["build", f"--drv={drv}", f"--attr={attr}", f"--system={system}"]
    argv += [flag for flag, on in (("--checks", checks), ("--checks-forced", checks_forced),
                                   ("--checks-unavailable", checks_unavailable)) if on]
    if output != "packages":
        argv.append(f"--output={output}")
    if flake:
        argv.append(f"--flake={flake}")
    if min_free_gib is not None:
        argv.append(f"--min-free-gib={min_free_gib:g}")
    argv += [f"--{flag}={value}" for flag, value in (("disk-path", disk_path), ("gc-roots", gc_roots)) if value]
    return argv


def _settings(path: str | None):
    from .settings_file import given_path, load
    given = given_path(path)
    return load(given, workers=False) if given else None


def _cache_lookup(loaded):
    cache = loaded.settings.cache if loaded else None
    if not cache or not cache.enabled:
        return None
    from .cache.push import cached_paths
    creds = _cache_credentials(loaded)
    return lambda paths: cached_paths(cache, paths, credentials=creds)


def _cache_credentials(loaded) -> dict | None:
    from .secrets_file import load_secrets
    try:
        return load_secrets(loaded).cache_credentials()
    except ConfigError:
        return None


def run_plan(args) -> Outcome:
    from . import flake as flake_mod
    from . import names
    from .config import PlanSettings
    from .plan import build_plan
    loaded = _settings(args.settings)
    plan_settings = loaded.settings.plan if loaded else PlanSettings()
    if args.systems:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        bad = [s for s in systems if not names.SYSTEM.fits(s)]
        if bad or not systems:
            raise UsageError(f"--systems: not systems: {bad or args.systems!r}")
    else:
        systems = list(loaded.settings.flake.systems) if loaded else ["x86_64-linux", "aarch64-linux"]
    try:
        only = names.parse_attrs(args.attrs)
    except ValueError as e:
        raise UsageError(f"--attrs: {e}") from None
    params = flake_mod.EvalParams(tuple(systems), tuple(plan_settings.checks), tuple(plan_settings.runners),
                                  tuple(plan_settings.runner_patterns), tuple(plan_settings.outputs),
                                  tuple(only) if only else None)
    limits = flake_mod.EvalLimits(plan_settings.eval_timeout, plan_settings.eval_memory_mb or None,
                                  plan_settings.error_messages)
    evaluation = flake_mod.evaluate(args.flake, params, limits)
    cached = None if args.no_cache else _cache_lookup(loaded)
    plan = replace(build_plan(args.flake, evaluation, plan_settings, systems, only or None, cached),
                   revision=_revision(args.flake))
    plan = _in_dependency_order(plan)
    return Outcome(plan.to_json(), lambda _: human_plan(plan))


def _in_dependency_order(plan: Plan) -> Plan:
    """The plan with each job to build after the jobs it needs (plan.with_dependencies),
    from one ``nix path-info --recursive`` over the derivations this host evaluated. Without
    it (a store query that fails) the jobs are unordered, as the log says."""
    from . import nix
    from .plan import JobStatus, with_dependencies
    drvs = [j.drv for j in plan.jobs if j.status == JobStatus.BUILD and j.drv]
    if len(drvs) < 2:
        return plan
    try:
        infos = nix.path_info(drvs, recursive=True)
    except NixError as e:
        print(f"redox-ci plan: the jobs are not in dependency order: {e}", file=sys.stderr)
        return plan
    references = {path: info.references for path, info in infos.items() if info is not None}
    return replace(plan, jobs=with_dependencies(plan.jobs, references))


def _revision(ref: str) -> str:
    """The commit ``ref`` names (a branch's tip for a reference without one); "" when Nix
    cannot say. Asked right after the evaluation: Nix resolves a branch again for each
    command, so a push in that moment would name the newer commit."""
    from . import nix
    from .errors import NixError
    try:
        return nix.flake_metadata(ref).revision or ""
    except NixError:
        return ""


def human_plan(plan: Plan) -> str:
    at = f" at {plan.revision[:12]}" if plan.revision else ""
    lines = [f"plan for {plan.flake}{at}: " + ", ".join(f"{n} {s}" for s, n in plan.summary().items())]
    for system, ev in plan.evaluation.items():
        stats = ev.get("stats") or {}
        if stats:
            lines.append(f"  {system}: evaluated in {stats['seconds']} s ({stats['evaluations']} nix eval)")
    for j in plan.jobs:
        tests = " tests" + (" (forced on)" if j.checks_forced else "") if j.checks else ""
        also = f" (also {', '.join(j.aliases)})" if j.aliases else ""
        why = f"  - {j.reason}" if j.reason and (j.status != "build" or j.checks_unavailable) else ""
        lines.append(f"  {j.status:8} {j.stage:16} {j.system:14} {j.name.split('.', 1)[1]}{also}{tests}{why}")
    ignored: dict[str, list[str]] = {}
    for i in plan.ignored:
        ignored.setdefault(i.reason, [])
        if i.attr not in ignored[i.reason]:
            ignored[i.reason].append(i.attr)
    for reason, attrs in sorted(ignored.items()):
        lines.append(f"  not built: {', '.join(sorted(attrs))}: {reason}")
    return "\n".join(lines)


# sysexits' EX_TEMPFAIL: not built here and now (too little disk), try again elsewhere or later.
EXIT_NOT_BUILT = 75


def run_build(args) -> Outcome:
    from . import disk
    from .build import BuildResult, build
    min_free = disk.DEFAULT_MIN_FREE_GIB if args.min_free_gib is None else args.min_free_gib
    space = disk.free_space(args.disk_path or disk.DEFAULT_DISK_PATH, min_free) if min_free > 0 else None
    if space and not space.enough:
        result = BuildResult(args.attr, args.system, args.drv, "not-built", space.reason, [], False,
                             args.checks, args.checks_forced)
    else:
        result = build(args.drv, attr=args.attr, system=args.system, checks=args.checks,
                       checks_forced=args.checks_forced, flake=args.flake, output=args.output,
                       checks_unavailable=args.checks_unavailable)
        if args.gc_roots and result.status == "success":
            result.gc_roots = disk.keep_outputs(args.gc_roots, args.system, args.attr, result.outputs)
    code = {"success": 0, "not-built": EXIT_NOT_BUILT}.get(result.status, 1)
    return Outcome(result.to_json(), lambda r: f"{r['system']}.{r['attr']}: {r['status']}: {r['reason']}", code)
