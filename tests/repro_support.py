"""Shared by the repro tests and the benchmark: the repro fixture flake in a git repo."""

from __future__ import annotations

from pathlib import Path

from redox_ci.fixture import REPRO_FIXTURE, commit_all, make_fixture_repo

# The fixture's attributes and what each must come out as.
EXPECTED = {
    "stable": "reproducible",
    "noisy": "unreproducible",
    "split": "unreproducible",
    "broken": "build-failed",
    "unevaluable": "build-failed",
}
# The one file of `noisy` that changes from build to build.
NOISY_FILE = "share/build-info.txt"


def make_repro_flake(dest: Path, salt: str | None = None, work: int | None = None) -> Path:
    """The repro fixture committed in a new repository at ``dest``.

    A new ``salt`` changes every derivation, so nothing is found already built;
    ``work`` makes each build busy-loop that many iterations first.
    """
    make_fixture_repo(dest, source=REPRO_FIXTURE)
    if salt is not None or work is not None:
        if salt is not None:
            (dest / "salt").write_text(salt + "\n")
        if work is not None:
            (dest / "work").write_text(f"{work}\n")
        commit_all(dest, f"salt {salt}, work {work}")
    return dest


def by_attr(summary: dict) -> dict[str, dict]:
    return {r["attr"]: r for r in summary["results"]}
