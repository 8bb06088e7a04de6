"""Reading a serial console as a stream: milestones, panics and harmless lines.

A serial console arrives in arbitrary pieces: a marker can be split across two
reads, terminal escapes (UEFI's console clears the screen and moves the cursor)
can sit in the middle of a line, and lines end in CR LF or a lone CR. This module
turns those pieces into events; it does no I/O and knows no clock, so the engine
passes in the time and the tests can feed it byte by byte. The markers are the
flake's (``mk-vm-test.nix``, ``../shared/redox-flake.md``), matched as text arrives,
so the prompt ``redox# ``, which no newline follows, counts when it is printed.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Literal

from .protocol import TestRun, TestsPrefix

# A complete escape sequence: CSI (ESC [ params intermediates final), OSC (ESC ] ...
# BEL or ESC \), or a two-character escape. UEFI's terminal uses ESC [ = 3 h too.
ESCAPE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# The start of an escape sequence cut off at the end of a piece: held back until the
# next piece completes it, so that no marker is split by a half-stripped escape.
PARTIAL_ESCAPE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*)?$")
# Past this much cleaned text, old text is dropped; markers are far shorter, so
# only the unsearched tail has to be kept. Bounds memory on a chatty console.
MAX_KEPT_CHARS = 64 * 1024


@dataclass(frozen=True)
class Milestone:
    """One stage of a boot. ``markers`` empty means: any output at all."""

    name: str
    markers: tuple[str, ...]
    what: str


# In boot order; each counts only after the one before. "Boot Complete" matches the
# banner with or without the quotes init prints it in ("  Redox OS Boot Complete!").
MILESTONES: tuple[Milestone, ...] = (
    Milestone("firmware", (), "firmware or bootloader output"),
    Milestone("kernel", ("Redox OS starting",), "the kernel starting"),
    Milestone("boot-complete", ("Boot Complete",), "Redox OS Boot Complete!"),
    Milestone("shell", ("redox# ", "Welcome to Redox", "ion>"), "a shell prompt"),
)
MILESTONE_NAMES = tuple(m.name for m in MILESTONES)
SUCCESS = "boot-complete"
SHELL = "shell"
# Milestones that may have a limit of their own; the shell's is the image's grace period.
TIMED_MILESTONES = tuple(n for n in MILESTONE_NAMES if n != SHELL)
PanicKind = Literal["kernel", "userspace"]
# A panic ends the boot wherever it comes, after Boot Complete too: getty panicking
# ("thread 'main' (1) panicked at src/bin/getty.rs", then "relibc: abort() called")
# leaves a booted system without a shell.
PANIC_MARKERS: dict[str, PanicKind] = {
    "KERNEL PANIC": "kernel", "panicked at": "userspace", "relibc: abort()": "userspace",
}


@dataclass(frozen=True)
class Reached:
    name: str
    at: float


@dataclass(frozen=True)
class Panic:
    line: str
    at: float
    complete: bool = False  # the line has ended; until then more of it may come
    kind: PanicKind = "kernel"


@dataclass
class SerialFollower:
    """Feed it serial output as it arrives; it reports milestones, panics, harmless lines."""

    harmless_patterns: tuple[str, ...] = ()
    # A test image's protocol prefix: its result lines are read into ``tests``.
    tests_prefix: TestsPrefix | None = None
    milestones: tuple[Milestone, ...] = MILESTONES
    panic_markers: dict[str, PanicKind] = field(default_factory=lambda: dict(PANIC_MARKERS))
    reached: list[Reached] = field(default_factory=list)
    harmless: list[str] = field(default_factory=list)
    panic: Panic | None = None
    tests: TestRun | None = None
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    _carry: str = ""          # an escape sequence not complete yet
    _pending_cr: bool = False  # the last piece ended in CR; a LF next is the same line end
    _text: str = ""           # cleaned text, LF line ends
    _searched: int = 0        # _text before this offset has been searched for panics
    _cursor: int = 0          # the next milestone is searched from here (milestones are ordered)
    _line_start: int = 0
    _panic_start: int | None = None  # where the panic line starts in _text

    def __post_init__(self) -> None:
        if self.tests_prefix is not None and self.tests is None:
            self.tests = TestRun(self.tests_prefix)

    @property
    def next_milestone(self) -> Milestone | None:
        done = len(self.reached)
        return self.milestones[done] if done < len(self.milestones) else None

    def has(self, name: str) -> bool:
        return any(r.name == name for r in self.reached)

    def last(self) -> Reached | None:
        return self.reached[-1] if self.reached else None

    def feed(self, data: bytes, at: float) -> list[Reached | Panic]:
        """Take the next raw piece of console output; return what it completed."""
        events: list[Reached | Panic] = []
        if data and not self.reached and not self.milestones[0].markers:
            events.append(self._reach(self.milestones[0].name, at))
        self._append(self._decoder.decode(data))
        self._scan_panic(at, events)
        if self.panic is None:
            self._scan_milestones(at, events)
        self._scan_lines(at)
        self._trim()
        return events

    def _append(self, text: str) -> None:
        text = self._carry + text
        partial = PARTIAL_ESCAPE_RE.search(text)
        self._carry = text[partial.start():] if partial else ""
        text = text[:partial.start()] if partial else text
        text = ESCAPE_RE.sub("", text)
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        self._text += text.replace("\r\n", "\n").replace("\r", "\n")

    def _scan_panic(self, at: float, events: list) -> None:
        longest = max(map(len, self.panic_markers), default=1)
        start = max(0, self._searched - (longest - 1))
        found = False
        if self.panic is None:
            hits = [(i, kind) for i, kind in ((self._text.find(m, start), kind)
                                               for m, kind in self.panic_markers.items()) if i >= 0]
            if hits:
                first, kind = min(hits)
                self._panic_start = self._text.rfind("\n", 0, first) + 1
                self.panic = Panic("", at, kind=kind)
                found = True
        if self.panic is not None and not self.panic.complete:
            # The panic line as far as it has come: a console writes a line in pieces.
            end = self._text.find("\n", self._panic_start)
            if end >= 0 and self._text[self._panic_start:end].rstrip().endswith(":"):
                # Rust's "panicked at src/bin/getty.rs:121:6:" puts the message on the next line.
                end = self._text.find("\n", end + 1)
            text = self._text[self._panic_start:end if end >= 0 else len(self._text)]
            line = " ".join(part.strip() for part in text.split("\n") if part.strip())
            self.panic = Panic(line, self.panic.at, complete=end >= 0, kind=self.panic.kind)
        if found:
            events.append(self.panic)
        self._searched = len(self._text)

    def _scan_milestones(self, at: float, events: list) -> None:
        while (m := self.next_milestone) is not None:
            if not m.markers:  # "any output": reached in feed(), from the raw bytes
                return
            hits = [i for i in (self._text.find(k, self._cursor) for k in m.markers) if i >= 0]
            if not hits:
                # A marker may still be completed by the next piece: keep its possible start.
                longest = max(map(len, m.markers), default=1)
                self._cursor = max(self._cursor, len(self._text) - (longest - 1))
                return
            first = min(hits)
            self._cursor = first + 1
            events.append(self._reach(m.name, at))

    def _reach(self, name: str, at: float) -> Reached:
        r = Reached(name, at)
        self.reached.append(r)
        return r

    def _scan_lines(self, at: float) -> None:
        while (end := self._text.find("\n", self._line_start)) >= 0:
            line = self._text[self._line_start:end].strip()
            self._line_start = end + 1
            if line and line not in self.harmless and any(p in line for p in self.harmless_patterns):
                self.harmless.append(line)
            if self.tests is not None:
                self.tests.read_line(line, at)
        if self.tests is not None and not self.tests.complete \
                and self.tests.is_complete_marker(self._text[self._line_start:]):
            self.tests.completed_at = at
        if len(self._text) - self._line_start > MAX_KEPT_CHARS:
            self._line_start = len(self._text)  # a runaway line: too long to be a warning

    def _trim(self) -> None:
        if len(self._text) <= MAX_KEPT_CHARS:
            return
        keep_from = [self._searched, self._cursor, self._line_start, len(self._text) - MAX_KEPT_CHARS]
        if self._panic_start is not None and not self.panic.complete:
            keep_from.append(self._panic_start)
        drop = min(keep_from)
        if drop > 0:
            self._text = self._text[drop:]
            self._searched -= drop
            self._cursor -= drop
            self._line_start -= drop
            if self._panic_start is not None:
                self._panic_start -= drop
