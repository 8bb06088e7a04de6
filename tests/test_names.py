"""The name rules: one per kind of name, and the plan, the CLI and the force form agree."""

from __future__ import annotations

import re

import pytest

from redox_ci import names
from redox_ci.errors import FlakeError
from redox_ci.flake import check_flake_ref, flake_ref_for
from redox_ci.master.schedulers import ATTRS_PATTERN, BRANCH_PATTERN, REVISION_PATTERN

pytestmark = pytest.mark.unit

FULL = "0123456789abcdef0123456789abcdef01234567"
REVISIONS = [FULL, FULL[:7], FULL[:39], FULL + "8", FULL.upper(), "g" * 40, FULL + "\n", "", "HEAD"]
BRANCHES = ["main", "release/1.0", "feature_x-2", "-x", "/x", "a..b", "main; rm", "a b", "main\n", "x" * 201]
ATTR_LISTS = ["cookbook", "cookbook redoxfs", "a, b", "runQemu'", "check-x", "a;b", "$(x)", "-rf", "1abc", "../x"]


@pytest.mark.parametrize("rev", REVISIONS)
def test_force_form_and_flake_ref_agree_on_revisions(rev):
    form = re.match(REVISION_PATTERN, rev) is not None
    try:
        flake_ref_for("/srv/repo", "main", rev or None)
        resolved = True
    except FlakeError:
        resolved = False
    assert form == resolved, rev
    assert names.REVISION.fits(rev) == (rev == FULL)


def test_a_revision_is_all_40_hex_digits():
    assert names.REVISION.check(FULL) == FULL
    for short in (FULL[:7], FULL[:12]):
        with pytest.raises(ValueError, match="40 hex digits"):
            names.REVISION.check(short)


@pytest.mark.parametrize("branch", BRANCHES)
def test_force_form_and_flake_ref_agree_on_branches(branch):
    form = re.match(BRANCH_PATTERN, branch) is not None
    try:
        flake_ref_for("/srv/repo", branch)
        resolved = True
    except FlakeError:
        resolved = False
    assert form == resolved == names.BRANCH.fits(branch), branch


@pytest.mark.parametrize("text", ATTR_LISTS)
def test_force_form_and_plan_agree_on_attribute_lists(text):
    form = re.match(ATTRS_PATTERN, text) is not None
    try:
        names.parse_attrs(text)
        parsed = True
    except ValueError:
        parsed = False
    assert form == parsed, text


def test_the_command_line_also_takes_whitespace_around_attribute_lists():
    # Never the other way round: what the form takes, `redox-ci plan --attrs` takes as it is.
    assert names.parse_attrs(" a\tb\n") == ["a", "b"]
    assert not re.match(ATTRS_PATTERN, " a\tb\n")


def test_a_trailing_newline_is_not_the_end():
    for rule, good in ((names.ATTR, "cookbook"), (names.SYSTEM, "x86_64-linux"), (names.BRANCH, "main"),
                       (names.REVISION, FULL), (names.FLAKE_REF, "github:o/r"), (names.STAGE, "host-tools")):
        assert rule.fits(good) and not rule.fits(good + "\n")
        with pytest.raises(ValueError):
            rule.check(good + "\n")
    with pytest.raises(ValueError):
        names.check_attrs(["cookbook\n"])


def test_flake_refs():
    assert check_flake_ref("github:brittonr/redoxos-nix?ref=main") == "github:brittonr/redoxos-nix?ref=main"
    for bad in ("", "-x", "x;rm -rf /", "a b", "x\n"):
        with pytest.raises(FlakeError, match="not a flake reference"):
            check_flake_ref(bad)


def test_systems():
    assert names.check_systems(["x86_64-linux", "aarch64-linux"]) == ["x86_64-linux", "aarch64-linux"]
    for bad in ([], ["x86"], ["X86_64-linux"]):
        with pytest.raises(ValueError, match="like 'x86_64-linux'"):
            names.check_systems(bad)


def test_attribute_lists_parse_once_each():
    assert names.parse_attrs("cookbook, redoxfs redoxfs  installer") == ["cookbook", "redoxfs", "installer"]
    assert names.parse_attrs(None) == [] and names.parse_attrs("") == []
    with pytest.raises(ValueError, match="not Nix attribute names: 'a;b'"):
        names.parse_attrs("ok a;b")


def test_form_regex_is_anchored_for_re_match():
    assert names.form_regex(names.SYSTEM) == r"^[a-z0-9_]+-[a-z0-9_]+\Z"
    assert re.match(names.form_regex(names.SYSTEM, optional=True), "")
    assert not re.match(names.form_regex(names.SYSTEM), "x86_64-linux\n")
