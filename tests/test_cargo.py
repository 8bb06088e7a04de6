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


# The real installer today: `cargo test --release || echo ...` over a crate with no tests.
INSTALLER_TODAY = """installer> running 0 tests
installer>
installer> test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
installer>
installer>    Doc-tests redox_installer
installer>
installer> running 0 tests
installer>
installer> test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
"""


def test_zero_tests_is_a_warning_not_a_failure():
    v = judge(parse_test_output(INSTALLER_TODAY), True)
    assert v.ok and v.warning and v.reason.startswith("0 tests")
    v = judge(parse_test_output("test result: ok. 0 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out"), True)
    assert v.ok and v.warning and "3 ignored" in v.reason


def test_a_failure_anywhere_fails_even_beside_empty_suites():
    v = judge(parse_test_output(INSTALLER_TODAY + FAILED), True)
    assert not v.ok and not v.warning and "swallowed" in v.reason


def test_no_test_result_at_all_is_a_failure():
    # Tests on, and cargo printed nothing: a check phase that never ran cargo test, or a
    # compile error that `|| echo` hid.
    v = judge(parse_test_output("No tests found"), True)
    assert not v.ok and "no cargo test result" in v.reason
