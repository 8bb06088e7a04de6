"""The names redox-ci takes from settings, the command line, webhooks and the force form.

A name (Nix attribute, system, git branch, git revision, flake reference) reaches Nix
as one argv element, but it also ends up in logs, URLs, build properties and file
names, so it is checked against one rule before anything runs. The rules live here
alone, and the settings models, the plan and its command line, ``flake_ref_for``, the
reproducibility run and the force form (``master/schedulers.py``) all use them: what
one refuses, the others refuse too.

Each rule (``Rule``) is a pattern matched in full (a trailing newline is not "the
end", as it is for ``$``) and a check that raises ``ValueError`` with a sentence
(callers turn it into their own error: a settings error, a usage error, a failed
step); the force form gets the same pattern anchored the way Buildbot applies it
(``form_regex``).

A revision is the full 40 hex digits of a commit, everywhere. Nix's ``rev=`` takes
nothing shorter, Buildbot records the revision it is given on the build and its
pollers and GitHub's hook give all 40, and a short one grows ambiguous as the
repository grows. A person with a short revision runs ``git rev-parse`` first.
(``flake_ref_for`` once took 7 to 40 digits and then refused all but 40; the force
form took 40.)

No pydantic, no Buildbot: both halves import this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    pattern: str  # matched in full; no anchors
    refusal: str  # the ValueError's message; {} is the refused text, quoted

    def fits(self, text: object) -> bool:
        return isinstance(text, str) and re.fullmatch(self.pattern, text) is not None

    def check(self, text: str) -> str:
        if not self.fits(text):
            raise ValueError(self.refusal.format(repr(text)))
        return text


# Nix attribute names as the flake uses them (camelCase, dashes in checks).
ATTR = Rule(r"[A-Za-z_][A-Za-z0-9_'-]*", "not a Nix attribute name: {}")
ATTR_WORDS = "Nix attribute names (letters, digits, '_', '-', \"'\")"
SYSTEM = Rule(r"[a-z0-9_]+-[a-z0-9_]+", "system must be like 'x86_64-linux', got {}")
# Git ref names as the force form and pollers give them: no shell or URL
# metacharacters, no "..", no leading "-" or "/".
BRANCH = Rule(r"(?!-)(?!/)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}", "not a branch name: {}")
BRANCH_WORDS = "a git branch name: letters, digits, '.', '_', '-' and '/'"
# Tags to build, as fnmatch patterns ("v*", "release-[0-9]*"): a tag name's characters
# and the wildcards.
TAG_PATTERN = Rule(r"(?!-)(?!/)[A-Za-z0-9._/*?\[\]!-]{1,200}",
                   "not a tag pattern (letters, digits, '.', '_', '-', '/' and the wildcards '*', '?', "
                   "'[...]'): {}")
# Attribute names as fnmatch patterns ("run-redox-*", "*Test"), e.g. runner scripts to leave unbuilt.
ATTR_PATTERN = Rule(r"[A-Za-z0-9_'*?\[\]!-]+",
                    "not an attribute pattern (letters, digits, '_', '-', \"'\" and the wildcards '*', '?', "
                    "'[...]'): {}")
REVISION_WORDS = "40 hex digits"
REVISION = Rule(r"[0-9a-f]{40}", f"not a git revision ({REVISION_WORDS}): {{}}")
# Characters a flake reference may contain. Anything outside this set is refused
# rather than quoted: a reference is embedded in logs and URLs too.
FLAKE_REF = Rule(r"(?!-)[A-Za-z0-9+:/._~@%?&=,#-]+", "not a flake reference: {}")
# Pipeline stages: lower-case words joined by '-' ("other" is the stage of the rest).
STAGE = Rule(r"[a-z][a-z0-9-]*", "stage name {} must be lower-case words joined by '-', not 'other'")
# Between the attribute names of a list typed by a person ("a, b c").
LIST_SEPARATOR = r"[ ,]+"


def form_regex(rule: Rule, *, optional: bool = False, separated: bool = False) -> str:
    """``rule`` for a force-form field, which Buildbot checks with ``re.match``.

    It ends in ``\\Z``, not ``$``, so a trailing newline is refused too; ``optional``
    also takes an empty field; ``separated`` takes a list joined by spaces or commas.
    """
    body = f"{rule.pattern}({LIST_SEPARATOR}{rule.pattern})*" if separated else rule.pattern
    return f"^({body})?\\Z" if optional else f"^{body}\\Z"


def check_attrs(names: Iterable[str]) -> list[str]:
    """All of ``names``, or a ValueError naming every bad one."""
    names = list(names)
    bad = [n for n in names if not ATTR.fits(n)]
    if bad:
        raise ValueError(f"not Nix attribute names: {', '.join(map(repr, bad))}")
    return names


def parse_attrs(text: str | Iterable[str] | None) -> list[str]:
    """Attribute names from "a, b c" or a list, each once; ValueError names a bad one."""
    if text is None:
        return []
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    return list(dict.fromkeys(check_attrs(items)))


def check_systems(systems: list[str]) -> list[str]:
    if not systems or not all(SYSTEM.fits(s) for s in systems):
        raise ValueError(f"systems must be like 'x86_64-linux', got {systems!r}")
    return systems
