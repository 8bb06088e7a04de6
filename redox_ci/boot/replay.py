"""A stand-in VMM: replays a recorded serial console with its timing, then stays up.

It lets the engine be tested and benchmarked against exact, repeatable consoles
(a clean boot, a panic, a hang, a marker cut in two) as a real process, the way a
VMM is run: the engine cannot tell it from QEMU. A transcript is JSON lines:

    {"delay": 0.5, "data": "Redox OS starting\\r\\n"}   wait, then write data as is
    {"delay": 0, "stderr": "qemu: warning\\n"}           the VMM's own output
    {"exit": 3}                                          exit with this status

Without an exit line it stays alive until it is stopped, as a hung VM does.

    python -m redox_ci.boot.replay TRANSCRIPT [--serial PATH] [--marks FILE]

``--serial`` writes the console to PATH (a file or FIFO, as Cloud Hypervisor's
``--serial file=PATH``) instead of stdout; ``--marks`` records when each write
started (time.monotonic, one JSON line per step) for the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import TranscriptError

STEP_KEYS = {"delay", "data", "stderr", "exit"}


@dataclass(frozen=True)
class Step:
    delay: float = 0.0
    data: str | None = None
    stderr: str | None = None
    exit: int | None = None


def parse_step(obj: object, where: str) -> Step:
    if not isinstance(obj, dict):
        raise TranscriptError(f"{where}: expected a JSON object like {{\"delay\": 0.1, \"data\": \"...\"}}")
    unknown = sorted(set(obj) - STEP_KEYS)
    if unknown:
        raise TranscriptError(f"{where}: unknown key(s) {unknown}; known: {sorted(STEP_KEYS)}")
    delay = obj.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise TranscriptError(f"{where}: delay must be a number of seconds >= 0, got {delay!r}")
    for key in ("data", "stderr"):
        if key in obj and not isinstance(obj[key], str):
            raise TranscriptError(f"{where}: {key} must be a string, got {obj[key]!r}")
    code = obj.get("exit")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255):
        raise TranscriptError(f"{where}: exit must be a status 0..255, got {code!r}")
    return Step(float(delay), obj.get("data"), obj.get("stderr"), code)


def load_transcript(path: str | Path) -> list[Step]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TranscriptError(f"transcript {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TranscriptError(f"transcript {p}: cannot read it: {e}") from None
    steps = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TranscriptError(f"{p}:{n}: not JSON: {e.msg}") from None
        steps.append(parse_step(obj, f"{p}:{n}"))
    if not steps:
        raise TranscriptError(f"transcript {p} is empty")
    return steps


def write_transcript(path: Path, steps: list[dict]) -> Path:
    """The inverse of load_transcript, for tests and benchmarks that make transcripts."""
    path.write_text("".join(json.dumps(s) + "\n" for s in steps), encoding="utf-8")
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def play(steps: list[Step], serial_fd: int, stderr_fd: int = 2, marks: IO[str] | None = None) -> int | None:
    """Write the steps with their delays; return the exit status of an exit step, if any."""
    for i, step in enumerate(steps):
        if step.delay:
            time.sleep(step.delay)  # the stand-in's job is to take its time, like a VM
        if step.data is not None:
            if marks is not None:  # noted before the write: the reader may stop us right after it
                marks.write(json.dumps({"step": i, "t": time.monotonic()}) + "\n")
                marks.flush()
            _write_all(serial_fd, step.data.encode("utf-8"))
        if step.stderr is not None:
            _write_all(stderr_fd, step.stderr.encode("utf-8"))
        if step.exit is not None:
            return step.exit
    return None


def stay_alive() -> None:
    """A hung VM: do nothing until a signal ends the process."""
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redox_ci.boot.replay", description=__doc__.splitlines()[0])
    parser.add_argument("transcript")
    parser.add_argument("--serial", help="write the console here (file or FIFO) instead of stdout")
    parser.add_argument("--marks", help="record the start time of each write here (JSON lines)")
    args = parser.parse_args(argv)
    try:
        steps = load_transcript(args.transcript)
    except TranscriptError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    serial_fd = os.open(args.serial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if args.serial else 1
    marks = open(args.marks, "w", encoding="utf-8") if args.marks else None
    code = play(steps, serial_fd, marks=marks)
    if code is not None:
        return code
    stay_alive()
    return 0


if __name__ == "__main__":
    sys.exit(main())
