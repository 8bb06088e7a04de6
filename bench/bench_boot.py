"""Verdict latency: redox-ci's boot engine against the flake's boot-test polling loop.

Both judge the same recorded consoles, played with their real timing by the same
stand-in VMM process (redox_ci.boot.replay), which notes when it starts each write.
Latency is the time from the write that completes the success or panic marker to
the verdict. The flake's loop is re-implemented faithfully from
nix/pkgs/infrastructure/boot-test.nix: serial console to a file, elapsed time in
whole seconds (date +%s), poll once a second, grep only the newly read chunk,
sleep 2 s after "Boot Complete", stop 1 s after the VM died, no panic detection.
A real boot takes 60 to 180 s, so where its marker falls between two polls is
random: each flake run starts polling at a random phase (seeded) of its period.

    python bench/bench_boot.py [--runs N] [--flake-timeout SEC]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redox_ci.boot.engine import follow
from redox_ci.boot.markers import SerialFollower
from redox_ci.boot.replay import load_transcript
from redox_ci.boot.run import follow_plan
from redox_ci.boot.vmm import VmmCommand
from redox_ci.config import BootImage, BootSettings

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = ROOT / "fixtures" / "boot" / "transcripts"
CASES = (("clean", "boot-complete"), ("split", "boot-complete"), ("panic", "panic"))
# The flake's boot-test: poll period and the fixed wait after success.
FLAKE_POLL_S = 1
FLAKE_SETTLE_S = 2
FLAKE_DEFAULT_TIMEOUT_S = 90


def replay_argv(transcript: Path, marks: Path, serial: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "redox_ci.boot.replay", str(transcript), "--marks", str(marks)]
    return argv + (["--serial", str(serial)] if serial else [])


def marker_step(transcript: Path, what: str) -> int:
    """Index of the write that completes the marker, found by the engine's own reader."""
    f = SerialFollower()
    for i, step in enumerate(load_transcript(transcript)):
        if step.data is not None:
            f.feed(step.data.encode(), at=float(i))
        if what == "panic" and f.panic is not None:
            return int(f.panic.at)
        if f.has(what):
            return next(int(r.at) for r in f.reached if r.name == what)
    raise SystemExit(f"{transcript}: no {what} marker")


def mark_time(marks: Path, step: int) -> float:
    for line in marks.read_text().splitlines():
        m = json.loads(line)
        if m["step"] == step:
            return m["t"]
    raise SystemExit(f"{marks}: step {step} was never written")


def redox_ci_run(transcript: Path, step: int, work: Path) -> tuple[float, float, str]:
    """(verdict latency, VM-stopped latency, verdict) for one redox-ci run."""
    marks = work / "marks.jsonl"
    command = VmmCommand("replay", replay_argv(transcript, marks), None)
    # Judged at Boot Complete, as the flake's older boot test did: that is what is timed.
    settings = BootSettings(images={"redox-minimal": BootImage(shell=False)})
    r = follow(command, follow_plan(settings, None, None), work / "serial.log", work / "vmm.log")
    t = mark_time(marks, step)
    return r.decided - t, r.started + r.elapsed - t, r.verdict


def flake_loop_run(transcript: Path, step: int, work: Path, timeout: int, phase: float) -> tuple[float, str]:
    """(verdict latency, verdict) for the flake's polling loop."""
    serial, marks = work / "serial.log", work / "marks.jsonl"
    serial.touch()
    vm = subprocess.Popen(replay_argv(transcript, marks, serial), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        time.sleep(phase)
        start = int(time.time())
        last_size, m_boot = 0, False
        while True:
            if int(time.time()) - start >= timeout:
                break
            if vm.poll() is not None:
                time.sleep(1)
                break
            size = serial.stat().st_size
            if size > last_size:
                with serial.open("rb") as f:
                    f.seek(last_size)
                    new = f.read().decode("utf-8", "replace")
                last_size = size
                m_boot = m_boot or "Boot Complete" in new
                re.search("(ion>|Welcome to Redox)", new)  # the shell check, for its cost
                if m_boot:
                    time.sleep(FLAKE_SETTLE_S)
                    re.search("(ion>|Welcome to Redox)", serial.read_text("utf-8", "replace"))
                    break
            time.sleep(FLAKE_POLL_S)
        decided = time.monotonic()
    finally:
        vm.kill()
        vm.wait()
    return decided - mark_time(marks, step), "pass" if m_boot else "fail"


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per transcript and side")
    parser.add_argument("--flake-timeout", type=int, default=10,
                        help=f"the flake loop's timeout here (its default is {FLAKE_DEFAULT_TIMEOUT_S} s)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the flake loop's poll phases")
    args = parser.parse_args()
    os.chdir(ROOT)
    rng = random.Random(args.seed)
    print(f"{'transcript':<10} {'marker':<14} {'redox-ci verdict':>17} {'VM stopped':>11} "
          f"{'flake loop':>11} {'ratio':>8}   verdicts (redox-ci / flake)")
    for name, what in CASES:
        transcript = TRANSCRIPTS / f"{name}.jsonl"
        step = marker_step(transcript, what)
        ours, stopped, ours_v, theirs, theirs_v = [], [], [], [], []
        runs_flake = 1 if what == "panic" else args.runs  # a panic costs it the whole timeout
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                work = Path(tmp) / f"ours{i}"
                work.mkdir()
                latency, done, verdict = redox_ci_run(transcript, step, work)
                ours.append(latency), stopped.append(done), ours_v.append(verdict)
            for i in range(runs_flake):
                work = Path(tmp) / f"flake{i}"
                work.mkdir()
                latency, verdict = flake_loop_run(transcript, step, work, args.flake_timeout,
                                                   rng.uniform(0, FLAKE_POLL_S))
                theirs.append(latency), theirs_v.append(verdict)
        o, s, t = statistics.median(ours), statistics.median(stopped), statistics.median(theirs)
        print(f"{name:<10} {what:<14} {fmt(o):>17} {fmt(s):>11} {fmt(t):>11} {t / o:>7.0f}x   "
              f"{ours_v.count('pass')}/{len(ours_v)} pass / {theirs_v.count('pass')}/{len(theirs_v)} pass"
              f"   (redox-ci max {fmt(max(ours))}, flake max {fmt(max(theirs))})")
        if what == "panic":
            print(f"\npanic: redox-ci fails {fmt(o)} after the panic line; the flake's loop sees no panic and "
                  f"fails only at its timeout ({fmt(t)} after the panic with --flake-timeout "
                  f"{args.flake_timeout}; {FLAKE_DEFAULT_TIMEOUT_S} s by default, 180 s on TCG).")
    print(f"\nmedians over {args.runs} runs (seed {args.seed}); flake loop: {FLAKE_POLL_S} s polls, "
          f"{FLAKE_SETTLE_S} s settle; a flake 'fail' on split is the marker cut by a poll.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
