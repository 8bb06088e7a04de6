"""``redox-ci`` imports only the module of the verb it runs: every verb must be mapped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from redox_ci.cli import VERB_MODULE, build_parser, named_verb, verb_modules

pytestmark = pytest.mark.unit


def verbs(parser) -> set[str]:
    return set(parser._subparsers._group_actions[0].choices)


def test_every_verb_has_its_module():
    assert verbs(build_parser()) == set(VERB_MODULE)


@pytest.mark.parametrize("verb", sorted(VERB_MODULE))
def test_a_verb_s_module_alone_registers_it(verb):
    assert verb in verbs(build_parser([verb, "--help"]))


def test_the_verb_is_found_after_global_options():
    assert named_verb(["--json-out", "build", "cache", "push"]) == "cache"
    assert named_verb(["build", "--drv", "x"]) == "build"
    assert named_verb(["--help"]) is None
    assert named_verb(["nope"]) is None and verb_modules(["nope"]) == verb_modules([])


def test_the_build_verb_imports_no_other_verb():
    code = ("import sys; from redox_ci.cli import build_parser; build_parser(['build', '--help']); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('redox_ci'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "redox_ci.plan_cli" in loaded
    for other in ("redox_ci.local", "redox_ci.cache.cli", "redox_ci.boot.cli", "redox_ci.repro.cli",
                  "redox_ci.config", "redox_ci.nix"):
        assert other not in loaded
