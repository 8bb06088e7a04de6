"""Read cargo's test output out of a build log.

The derivation's exit status is not enough: the Redox installer's check phase is
``cargo test --release || echo "No tests found"``, so a failing test leaves the build
green. What cargo printed is the truth: every ``test result:`` line is summed, and a
``FAILED`` result fails the step whatever the build's status. Tests that ran but were
zero (the installer has none today: ``test result: ok. 0 passed``) are a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .nix import strip_ansi

RESULT_RE = re.compile(
    r"test result: (?P<status>ok|FAILED)\. (?P<passed>\d+) passed; (?P<failed>\d+) failed;"
    r" (?P<ignored>\d+) ignored(?:; (?P<measured>\d+) measured)?(?:; (?P<filtered>\d+) filtered out)?")
FAILED_TEST_RE = re.compile(r"^test (?P<name>\S+) \.\.\. FAILED$")
# Nix prefixes each build-log line with "pkgname> " when run with -L.
NIX_PREFIX_RE = re.compile(r"^[\w.+-]+> ")


@dataclass
class TestCounts:
    suites: int = 0
    passed: int = 0
    failed: int = 0
    ignored: int = 0
    failed_suites: int = 0
    failed_tests: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.passed + self.failed

    def describe(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed, {self.ignored} ignored"
        return text + (f" in {self.suites} suites" if self.suites != 1 else "")


def parse_test_output(log: str) -> TestCounts:
    counts = TestCounts()
    for raw in strip_ansi(log).splitlines():
        line = NIX_PREFIX_RE.sub("", raw.rstrip("\r"))
        m = RESULT_RE.search(line)
        if m:
            counts.suites += 1
            counts.passed += int(m["passed"])
            counts.failed += int(m["failed"])
            counts.ignored += int(m["ignored"])
            counts.failed_suites += m["status"] == "FAILED"
            continue
        f = FAILED_TEST_RE.match(line.strip())
        if f and f["name"] not in counts.failed_tests:
            counts.failed_tests.append(f["name"])
    return counts


@dataclass(frozen=True)
class TestVerdict:
    ok: bool
    reason: str
    # ok, but a person should look: cargo ran no test.
    warning: bool = False


def judge(counts: TestCounts, build_succeeded: bool) -> TestVerdict:
    """The verdict on a package whose tests were meant to run."""
    if counts.failed or counts.failed_suites:
        names = f" ({', '.join(counts.failed_tests)})" if counts.failed_tests else ""
        swallowed = " - the derivation swallowed the failure" if build_succeeded else ""
        return TestVerdict(False, f"tests failed: {counts.describe()}{names}{swallowed}")
    if counts.suites == 0:
        return TestVerdict(False, "tests are enabled but no cargo test result was printed")
    if counts.ran == 0:
        return TestVerdict(True, f"0 tests: cargo ran none ({counts.describe()})", warning=True)
    return TestVerdict(True, counts.describe())
