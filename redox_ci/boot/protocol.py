"""The VM test images' protocol: what their serial console says about each test.

The flake's test images (``redox-functional-test``, ``redox-network-test``, ...) run
their tests at boot and print, one line each (``mk-vm-test.nix`` reads them so)::

    FUNC_TESTS_START
    FUNC_TEST:<name>:PASS
    FUNC_TEST:<name>:FAIL:<reason>
    FUNC_TEST:<name>:SKIP
    FUNC_TESTS_COMPLETE

The network tests use the prefix ``NET_TEST``. A result line counts only at the start
of a line and only once it has ended (the reason runs to the end of the line). Pure:
lines in, results out; the serial follower feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

TestsPrefix = Literal["FUNC_TEST", "NET_TEST"]


class TestStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


# The protocol's words for them.
STATUS_WORDS = {"PASS": TestStatus.PASSED, "FAIL": TestStatus.FAILED, "SKIP": TestStatus.SKIPPED}


@dataclass(frozen=True)
class TestCase:
    name: str
    status: TestStatus
    reason: str = ""  # a failure's reason as the image printed it
    at: float = 0.0   # seconds after the VMM started

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status.value, "reason": self.reason,
                "at": round(self.at, 3)}

    def describe(self) -> str:
        return f"{self.name}: {self.reason}" if self.reason else self.name


@dataclass
class TestRun:
    """One image's tests as read so far; ``complete`` once ``<prefix>S_COMPLETE`` is seen."""

    prefix: TestsPrefix
    cases: list[TestCase] = field(default_factory=list)
    started_at: float | None = None
    completed_at: float | None = None
    # Lines with the prefix that say no known result: shown, never counted.
    unreadable: list[str] = field(default_factory=list)

    @property
    def start_marker(self) -> str:
        return f"{self.prefix}S_START"

    @property
    def complete_marker(self) -> str:
        return f"{self.prefix}S_COMPLETE"

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

    def count(self, status: TestStatus) -> int:
        return sum(c.status == status for c in self.cases)

    @property
    def failures(self) -> list[TestCase]:
        return [c for c in self.cases if c.status == TestStatus.FAILED]

    @property
    def ok(self) -> bool:
        """The flake's rule: complete, at least one result, no failure."""
        return self.complete and bool(self.cases) and not self.failures

    def read_line(self, line: str, at: float) -> TestCase | None:
        """Take one whole console line (escapes and line end gone); return a result it gave."""
        line = line.strip()
        if line == self.start_marker:
            self.started_at = at if self.started_at is None else self.started_at
        elif self.is_complete_marker(line):
            self.completed_at = at if self.completed_at is None else self.completed_at
        elif line.startswith(self.prefix + ":"):
            case = parse_result(line, self.prefix, at)
            if case is None:
                self.unreadable.append(line)
            else:
                self.cases.append(case)
                return case
        return None

    def is_complete_marker(self, text: str) -> bool:
        """COMPLETE needs no line end: nothing follows it that the verdict waits for."""
        return text.strip() == self.complete_marker

    def describe(self) -> str:
        return (f"{self.count(TestStatus.PASSED)} passed, {self.count(TestStatus.FAILED)} failed, "
                f"{self.count(TestStatus.SKIPPED)} skipped")

    def to_json(self) -> dict:
        return {
            "prefix": self.prefix, "started": self.started_at is not None, "complete": self.complete,
            "passed": self.count(TestStatus.PASSED), "failed": self.count(TestStatus.FAILED),
            "skipped": self.count(TestStatus.SKIPPED), "total": len(self.cases),
            "results": [c.to_json() for c in self.cases], "unreadable": list(self.unreadable),
        }


def parse_result(line: str, prefix: str, at: float = 0.0) -> TestCase | None:
    """``PREFIX:name:PASS``, ``PREFIX:name:FAIL:reason`` or ``PREFIX:name:SKIP``; else None."""
    parts = line.strip().split(":", 3)
    if len(parts) < 3 or parts[0] != prefix or not parts[1]:
        return None
    status = STATUS_WORDS.get(parts[2])
    if status is None or (len(parts) == 4 and status != TestStatus.FAILED):
        return None
    reason = parts[3].strip() if len(parts) == 4 else ""
    return TestCase(parts[1], status, reason, at)
