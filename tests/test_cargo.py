"""cargo test output: counts, failures and the verdict."""

import pytest

from redox_ci.cargo import judge, parse_test_output

pytestmark = pytest.mark.unit

OK = "test result: ok. 38 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s"
FAILED = """running 4 tests
test disk::tests::partitions ... FAILED
failures:
    disk::tests::partitions
test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s
No tests found"""


def test_counts_sum_over_suites_and_strip_prefixes_and_escapes():
    log = f"redoxfs> {OK}\n\x1b[32mtest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\x1b[0m\r\n"
    c = parse_test_output(log)
    assert (c.suites, c.passed, c.failed, c.ignored) == (2, 40, 0, 2)
    assert judge(c, True).ok


def test_swallowed_failure_is_a_failure():
    c = parse_test_output(FAILED)
    assert (c.passed, c.failed, c.failed_tests) == (3, 1, ["disk::tests::partitions"])
    v = judge(c, build_succeeded=True)
    assert not v.ok and "swallowed" in v.reason and "disk::tests::partitions" in v.reason


def test_no_tests_run_is_a_failure():
    assert not judge(parse_test_output("No tests found"), True).ok
    v = judge(parse_test_output("test result: ok. 0 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out"), True)
    assert not v.ok and "none ran" in v.reason
