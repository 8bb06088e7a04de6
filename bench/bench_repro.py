"""Benchmark: a reproducibility run against two plain ``nix build`` runs.

Over the repro fixture flake (``fixtures/repro-flake``), each measurement gets a
fresh salt so nothing is already built, and times

* plain: ``nix build`` of the attributes, then ``nix build --rebuild`` of the same,
  the least any second-build comparison costs;
* repro: ``redox-ci repro`` of the same attributes (one evaluation, both builds, NAR
  hashes, file lists, diffoscope, the report), as a Buildbot step runs it;
* repro with diffoscope missing, to show diffoscope's share.

It does so twice: with instant builds (only fixed costs show) and with builds that
busy-loop about a second each (``--work``), and prints medians and the ratios
repro / plain. The failing attribute is left out: a plain ``nix build`` stops at it.

    python3 bench/bench_repro.py [--rounds N] [--work ITERATIONS]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from repro_support import make_repro_flake  # noqa: E402
from tests.support import CLI  # noqa: E402

from redox_ci.nix import FLAKE_FEATURES  # noqa: E402

ATTRS = ["stable", "noisy", "split"]
SYSTEM = "x86_64-linux"
# Rounds per variant; the median of 3 is steady enough for runs of seconds.
DEFAULT_ROUNDS = 3
# Busy-loop iterations per build in the second series: about a second on this machine,
# so 3 attributes built twice spend about 6 s building.
DEFAULT_WORK = 1_000_000


def env() -> dict[str, str]:
    return {**os.environ, "NIX_CONFIG": f"{FLAKE_FEATURES}\nsubstituters =\n"}


def timed(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env())
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok_codes:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed, proc


def fresh_flake(workdir: Path, work: int) -> str:
    return str(make_repro_flake(workdir / uuid.uuid4().hex, salt=uuid.uuid4().hex, work=work))


def plain(workdir: Path, work: int) -> float:
    ref = fresh_flake(workdir, work)
    installables = [f"{ref}#packages.{SYSTEM}.{a}" for a in ATTRS]
    first, _ = timed(["nix", "build", "--no-link", *installables])
    # --rebuild exits 1 for the non-deterministic ones; --keep-going checks them all.
    second, _ = timed(["nix", "build", "--no-link", "--rebuild", "--keep-going", *installables], (0, 1))
    return first + second


def repro(workdir: Path, work: int, *extra: str) -> tuple[float, dict]:
    ref = fresh_flake(workdir, work)
    attrs = [arg for a in ATTRS for arg in ("--attr", a)]
    elapsed, proc = timed([*CLI, "repro", "--json", "--flake", ref, *attrs,
                           "--report-dir", str(workdir / uuid.uuid4().hex), *extra], (1,))
    summary = json.loads(proc.stdout)
    verdicts = {r["attr"]: r["status"] for r in summary["results"]}
    if verdicts != {"stable": "reproducible", "noisy": "unreproducible", "split": "unreproducible"}:
        sys.exit(f"unexpected verdicts: {verdicts}")
    return elapsed, summary


def series(workdir: Path, work: int, rounds: int) -> None:
    times: dict[str, list[float]] = {"plain": [], "repro": [], "nodiff": []}
    diffoscope: list[float] = []
    missing = str(workdir / "no-diffoscope")
    for _ in range(rounds):
        times["plain"].append(plain(workdir, work))
        elapsed, summary = repro(workdir, work)
        times["repro"].append(elapsed)
        diffoscope.append(sum(d["seconds"] for r in summary["results"] for d in r["diffoscope"]))
        times["nodiff"].append(repro(workdir, work, "--diffoscope", missing)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"work {work} iterations per build, {len(ATTRS)} attributes ({', '.join(ATTRS)}), {rounds} rounds")
    print(f"  nix build + nix build --rebuild  : {med['plain']:6.2f} s  ({_all(times['plain'])})")
    print(f"  redox-ci repro                   : {med['repro']:6.2f} s  ({_all(times['repro'])})")
    print(f"    of which diffoscope (2 outputs): {statistics.median(diffoscope):6.2f} s")
    print(f"  redox-ci repro, no diffoscope    : {med['nodiff']:6.2f} s  ({_all(times['nodiff'])})")
    print(f"  ratio repro / plain              : {med['repro'] / med['plain']:6.2f}")
    print(f"  ratio repro no diffoscope / plain: {med['nodiff'] / med['plain']:6.2f}")


def _all(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--work", type=int, default=DEFAULT_WORK)
    args = parser.parse_args()
    startup = statistics.median(timed([*CLI, "--help"])[0] for _ in range(args.rounds))
    print(f"redox-ci start-up (redox-ci --help): {startup:.2f} s, included in every repro figure")
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        for work in (0, args.work):
            series(Path(tmp), work, args.rounds)


if __name__ == "__main__":
    main()
