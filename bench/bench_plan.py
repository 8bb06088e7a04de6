"""Benchmark: the plan's one evaluation against one ``nix eval`` per attribute.

Over a generated Redox-like flake (``bench/flakegen.py``, 200 packages by default),
each round writes two fresh revisions (new salts, so no ``.drv`` is in the store and
no evaluation cache helps either side) and times

* one evaluation: ``redox_ci.flake.evaluate`` + ``redox_ci.plan.build_plan`` in this
  process, and ``redox-ci plan --json`` as a worker runs it (Python start-up included);
* per attribute: ``nix eval --raw REF#packages.x86_64-linux.<attr>.drvPath`` for every
  attribute, one after the other.

A warm-up round (not counted) also checks that both give the same derivations.
Prints the median of each and the ratio (target: the one evaluation at least 5x faster).

    python bench/bench_plan.py [--attrs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from flakegen import (SYSTEM, Layout, attr_count, flake_ref, layout, nix_env, plan_settings_toml, positive,
                      timing_line, write_flake)

from redox_ci import flake
from redox_ci.config import DEFAULT_RUNNERS, PlanSettings
from redox_ci.plan import Plan, build_plan

DEFAULT_ATTRS = 200
# Median of 3 after a warm-up: the per-attribute side takes tens of seconds a round.
DEFAULT_ROUNDS = 3
TARGET_RATIO = 5.0


def fresh(repo: Path, n: int) -> str:
    return flake_ref(repo, write_flake(repo, n, uuid.uuid4().hex))


def one_evaluation(ref: str, lay: Layout) -> Plan:
    settings = PlanSettings(stages=lay.stages, checks=lay.checks)
    params = flake.EvalParams((SYSTEM,), tuple(settings.checks), tuple(DEFAULT_RUNNERS))
    return build_plan(ref, flake.evaluate(ref, params), settings, [SYSTEM])


def plan_cli(ref: str, settings_file: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "redox_ci", "plan", "--json", "--flake", ref,
                           "--systems", SYSTEM, "--settings", str(settings_file), "--no-cache"],
                          capture_output=True, text=True, env=nix_env())
    if proc.returncode != 0:
        sys.exit(f"redox-ci plan exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def per_attribute(ref: str, attrs: list[str]) -> dict[str, str]:
    drvs = {}
    for attr in attrs:
        proc = subprocess.run(["nix", "eval", "--raw", f"{ref}#packages.{SYSTEM}.{attr}.drvPath"],
                              capture_output=True, text=True, env=nix_env())
        if proc.returncode != 0:
            sys.exit(f"nix eval of {attr} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        drvs[attr] = proc.stdout.strip()
    return drvs


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def check_same_derivations(plan: Plan, drvs: dict[str, str], lay: Layout) -> None:
    """Both ways must name the same derivations (bar the ones whose doCheck the plan forces)."""
    built = [j for j in plan.jobs if j.status == "build"]
    if sorted(j.attr for j in built) != sorted(lay.attrs):
        sys.exit(f"the plan builds {len(built)} jobs, the flake has {len(lay.attrs)} packages")
    forced = sorted(j.attr for j in built if j.checks_forced)
    if forced != sorted(lay.checks_off):
        sys.exit(f"the plan turns tests on for {forced}, the flake has them off for {lay.checks_off}")
    # A forced doCheck is another derivation; every other one must be the same.
    wrong = [j.attr for j in built if (j.drv == drvs[j.attr]) == j.checks_forced]
    if wrong:
        sys.exit(f"plan and per-attribute evaluation disagree on {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attrs", type=attr_count, default=DEFAULT_ATTRS, help=f"packages (default {DEFAULT_ATTRS})")
    parser.add_argument("--rounds", type=positive, default=DEFAULT_ROUNDS, help=f"rounds (default {DEFAULT_ROUNDS})")
    args = parser.parse_args()
    lay = layout(args.attrs)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        repo = Path(tmp) / "flake"
        settings_file = Path(tmp) / "settings.toml"
        settings_file.write_text(f'[flake]\nrepo = "{repo}"\nsystems = ["{SYSTEM}"]\n\n'
                                 + plan_settings_toml(lay))
        ref = fresh(repo, args.attrs)
        check_same_derivations(one_evaluation(ref, lay), per_attribute(ref, lay.attrs), lay)
        times: dict[str, list[float]] = {"api": [], "cli": [], "each": []}
        for _ in range(args.rounds):
            times["api"].append(timed(one_evaluation, fresh(repo, args.attrs), lay)[0])
            times["cli"].append(timed(plan_cli, fresh(repo, args.attrs), settings_file)[0])
            times["each"].append(timed(per_attribute, fresh(repo, args.attrs), lay.attrs)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"plan of a generated flake: {args.attrs} packages in {len(lay.stages)} stages, "
          f"{len(lay.checks)} host tools with tests, {args.rounds} rounds after a warm-up, fresh revision each")
    print(timing_line("one evaluation (flake.evaluate + build_plan)", times["api"]))
    print(timing_line("redox-ci plan --json (with Python start-up)", times["cli"]))
    print(timing_line(f"nix eval per attribute ({args.attrs} calls)", times["each"])
          + f"  = {1000 * med['each'] / args.attrs:.0f} ms per attribute")
    ratio, cli_ratio = med["each"] / med["api"], med["each"] / med["cli"]
    print(f"  {'ratio per attribute / one evaluation':44}: {ratio:7.1f}x  (CLI: {cli_ratio:.1f}x; "
          f"target >= {TARGET_RATIO:.0f}x: {'met' if min(ratio, cli_ratio) >= TARGET_RATIO else 'MISSED'})")


if __name__ == "__main__":
    main()
