"""Evaluation limits (issue 11, item 8), hit for real: a fixture flake whose evaluation
loops without end fails the plan on ``[plan].eval_timeout``, one that allocates without
end fails it on ``[plan].eval_memory_mb``; each message names the limit and its value.
Through ``redox-ci plan`` and through a real master and worker (one master, both cases,
the plan build's summary says which limit)."""

from __future__ import annotations

import pytest
from buildbot.process.results import FAILURE

from redox_ci.fixture import commit_all
from tests.master_support import running_master
from tests.support import run_cli

pytestmark = pytest.mark.e2e

ANCHOR = 'fstools = simple "fstools" [ ];'
# Three nested folds over lists of 100000: 10^15 steps in constant memory (each inner list
# is garbage after its fold), so only the time limit ends it.
LOOP = ('spin = let count = n: f: builtins.foldl\' (a: i: a + f i) 0 (builtins.genList (x: x) n); '
        'in if count 100000 (_: count 100000 (_: count 100000 (_: 1))) > 0 then simple "spin" [ ] else null;')
# A list that doubles at every call and is forced each time: 8 bytes per element, so
# 400 MiB are gone after about 25 calls, long before Nix's call depth limit.
HOG = ('hog = let grow = l: builtins.seq (builtins.length l) (grow (l ++ l)); '
       'in if grow [ 1 ] == null then null else simple "hog" [ ];')
# Small limits so that the test really hits them; the fixture's own evaluation (a few
# seconds, well under both) still fits.
TIMEOUT_S = 15
MEMORY_MB = 400
TIME_MESSAGE = f"took longer than the limit of {TIMEOUT_S} s ([plan].eval_timeout)"
MEMORY_MESSAGE = f"ran out of memory: it needs more than the limit of {MEMORY_MB} MiB ([plan].eval_memory_mb)"


def with_attr(text: str, attr: str) -> str:
    assert ANCHOR in text
    return text.replace(ANCHOR, f"{ANCHOR}\n            {attr}")


def commit_flake(repo, attr: str, message: str) -> str:
    """The fixture with ``attr`` added to its packages (and nothing else added), committed."""
    flake = repo / "flake.nix"
    text = flake.read_text()
    for old in (LOOP, HOG):
        text = text.replace(f"\n            {old}", "")
    flake.write_text(with_attr(text, attr))
    return commit_all(repo, message)


@pytest.mark.parametrize("attr, limit, message", [
    (LOOP, f"eval_timeout = {TIMEOUT_S}", TIME_MESSAGE),
    (HOG, f"eval_memory_mb = {MEMORY_MB}", MEMORY_MESSAGE),
], ids=["eval_limit_time_loop", "eval_limit_memory_hog"])
def test_eval_limit_fails_redox_ci_plan(tmp_path, fixture_repo, attr, limit, message):
    commit_flake(fixture_repo, attr, "an evaluation without end")
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[flake]\nrepo = "{fixture_repo}"\n[plan]\n{limit}\n')
    proc = run_cli("plan", "--flake", str(fixture_repo), "--settings", str(settings), "--no-cache",
                   "--systems", "x86_64-linux", "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("redox-ci plan: evaluating x86_64-linux "), proc.stderr


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    limits = f"[plan]\neval_timeout = {TIMEOUT_S}\neval_memory_mb = {MEMORY_MB}\n"
    # The poller is slow here: the test forces each revision itself.
    yield from running_master(tmp_path_factory, "evallimit", extra_toml=limits, poll_interval=3600)


@pytest.mark.parametrize("attr, message", [(LOOP, TIME_MESSAGE), (HOG, MEMORY_MESSAGE)],
                         ids=["eval_limit_master_time", "eval_limit_master_memory"])
def test_eval_limit_shown_by_the_plan_build(master, attr, message):
    rev = commit_flake(master.setup.repo, attr, "an evaluation without end")
    build = master.forced_build(master.force(revision=rev, systems=["x86_64-linux"]))
    assert build["results"] == FAILURE
    assert message in build["state_string"], build["state_string"]
    plan_step = master.step(build["buildid"], "plan")
    assert message in plan_step["state_string"]
    # Nothing was triggered: a plan past its limits builds nothing.
    assert master.jobs(build["buildid"]) == {}
    # The plan build's worker builds x86_64-linux: it evaluated it itself.
    assert master.evaluations(build["buildid"]) == {}
