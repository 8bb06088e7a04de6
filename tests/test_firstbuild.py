"""The first build's report that ``redox-ci local`` prints: counts, what did not succeed,
and a VM test image's tests one by one."""

from __future__ import annotations

import pytest

from redox_ci.firstbuild import report_lines

pytestmark = pytest.mark.unit

TESTS = {"prefix": "FUNC_TEST", "complete": True, "passed": 1, "failed": 1, "skipped": 1, "total": 3, "results": [
    {"name": "shell-echo", "status": "passed", "reason": ""},
    {"name": "nix-eval-arith", "status": "failed", "reason": "expected 42, got 41"},
    {"name": "snix-fetchers", "status": "skipped", "reason": ""}]}


def build(results: int, state: str, **props) -> dict:
    return {"results": results, "state_string": state, "properties": {k: [v, "test"] for k, v in props.items()}}


def test_the_report_lists_what_failed_and_each_test():
    jobs = {"x86_64-linux.cookbook": build(0, "cookbook: built, 9 passed"),
            "x86_64-linux.installer": build(2, "failed installer: tests failed (swallowed)"),
            "aarch64-linux.boot-qemu": build(3, "skipped: boot-qemu: no worker runs aarch64-linux VMs"),
            "x86_64-linux.boot-qemu-redox-functional-test": build(
                2, "fail (tcg): 1 of 3 tests failed", boot_result={"verdict": "fail", "tests": TESTS}),
            "x86_64-linux.boot-qemu": build(0, "pass (tcg)", boot_result={"verdict": "pass", "tests": None})}
    assert report_lines({"results": 2}, jobs) == [
        "first build finished: failure: 5 jobs, 2 failure, 1 skipped, 2 success",
        "  aarch64-linux.boot-qemu: skipped: boot-qemu: no worker runs aarch64-linux VMs",
        "  x86_64-linux.boot-qemu-redox-functional-test: failure: fail (tcg): 1 of 3 tests failed",
        "    FUNC_TEST: 1 passed, 1 failed, 1 skipped",
        "    passed   shell-echo",
        "    failed   nix-eval-arith: expected 42, got 41",
        "    skipped  snix-fetchers",
        "  x86_64-linux.installer: failure: installer: tests failed (swallowed)",
    ]
