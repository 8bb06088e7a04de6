"""The Commits page, its trends and the branch badge, in headless Chromium against a real master.

One master for the module builds two commits of the fixture flake, each forced at its
revision with a few attributes (a host tool with tests, the installer whose swallowed
test failure fails it, the boot image and its bootloader, so that QEMU boots it): the
second commit runs three more cookbook tests and boots ten seconds slower. The browser
opens "Commits" in Buildbot's UI, follows the link to the second commit's page and then
the trends; what it sees is checked against the REST API. Screenshots go to
$REDOX_CI_TEST_ARTEFACTS/visibility (default test-artefacts/visibility); the README's come
from there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from redox_ci.fixture import commit_all, git, set_host_tool_tests, slow_boot  # noqa: E402
from redox_ci.master.commits import job_facts, reason_of, unsourced  # noqa: E402
from tests.browser_support import BUILD_WAIT_SECONDS, browser, click, find, require_browser, wait  # noqa: E402
from tests.master_support import running_master  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = Path(os.environ.get("REDOX_CI_TEST_ARTEFACTS", ROOT / "test-artefacts")) / "visibility"
ATTRS = "cookbook installer redox-minimal bootloader"
SYSTEM = "x86_64-linux"
# The second commit: cookbook's tests (9 in the fixture) and a slower boot.
COOKBOOK_TESTS = 9, 12
SLOWER_BOOT_US = 10_000_000
# A window as tall as the job table and the four charts, for screenshots.
SHOT_SIZE = (1400, 1000)


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    require_browser()
    # No polling during the test: each commit is built once, forced at its revision.
    yield from running_master(tmp_path_factory, "visibility", systems=[SYSTEM], poll_interval=86400)


@pytest.fixture(scope="module")
def commits(master):
    """Both commits built; (revision, plan build) oldest first."""
    repo = master.setup.repo
    built = []
    for step in range(2):
        if step:
            set_host_tool_tests(repo, "cookbook", COOKBOOK_TESTS[1])
            slow_boot(repo, SLOWER_BOOT_US)
            commit_all(repo, "more cookbook tests, a slower boot")
        rev = git(repo, "rev-parse", "HEAD")
        build = master.forced_build(master.force(revision=rev, systems=[SYSTEM], attrs=ATTRS,
                                                 reason=f"commit {step + 1}"))
        built.append((rev, build))
    return built


@pytest.fixture(scope="module")
def shots():
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


@pytest.fixture(scope="module")
def page(master):
    with browser() as driver:
        driver.set_window_size(*SHOT_SIZE)
        yield driver


def dashboard(master) -> str:
    return f"{master.url}plugins/wsgi_dashboards/commits/"


def cells(row) -> list[str]:
    return [td.text for td in row.find_elements("css selector", "td")]


def test_commit_page_lists_both_commits_in_the_ui(master, commits, page, shots):
    page.get(f"{master.url}#/commits")
    short = [rev[:12] for rev, _ in commits]
    table = wait(page, "both commits in the Commits view", lambda d: [
        t for t in find(d, ".bb-wsgi-dashboard-view table.commits") if all(s in t.text for s in short)])[0]
    page.save_screenshot(str(shots / "commits.png"))
    listed = [tr.find_elements("css selector", "td")[0].text for tr in table.find_elements("css selector", "tr")[1:]]
    assert listed == short[::-1]  # newest first


def test_commit_page_has_every_job_with_its_numbers(master, commits, page, shots):
    rev, build = commits[1]
    click(page, "the second commit's link", lambda d: [
        a for a in find(d, ".bb-wsgi-dashboard-view table.commits a") if a.text == rev[:12]])
    rows = wait(page, "the job table", lambda d: find(d, "table.jobs tr.job"), timeout=BUILD_WAIT_SECONDS)
    page.save_screenshot(str(shots / "commit-page.png"))
    shown = {r.get_attribute("data-job"): cells(r) for r in rows}
    # Every job build the plan triggered, by job name (a system's evaluation build is the plan's).
    jobs = master.jobs(build["buildid"])
    assert set(shown) == set(jobs)
    # Failures first: the installer's swallowed test failure fails it.
    order = [r.get_attribute("data-job") for r in rows]
    assert order[0] == f"{SYSTEM}.installer" and shown[order[0]][3] == "FAILURE"
    for name, b in jobs.items():
        # The properties as the REST API gives them, read by the page's one reader of them.
        facts = job_facts(unsourced(b["properties"]))
        row = shown[name]
        assert row[3] == {0: "SUCCESS", 1: "WARNINGS", 2: "FAILURE", 3: "SKIPPED"}[b["results"]], name
        assert row[4] == reason_of(b["state_string"]), name
        if facts.tests:
            assert row[5:9] == [str(facts.tests.passed), str(facts.tests.failed), str(facts.tests.ignored),
                                facts.tests.kind], name
    assert shown[f"{SYSTEM}.cookbook"][5:9] == [str(COOKBOOK_TESTS[1]), "0", "0", "cargo"]
    assert shown[f"{SYSTEM}.installer"][5:9] == ["3", "1", "0", "cargo"]
    boot = job_facts(unsourced(jobs[f"{SYSTEM}.boot-qemu"]["properties"])).boot
    assert shown[f"{SYSTEM}.boot-qemu"][9].startswith("pass")
    assert boot.seconds > SLOWER_BOOT_US / 1e6
    assert f"boot-complete {boot.seconds:.2f} s" in shown[f"{SYSTEM}.boot-qemu"][9]
    # Links to the job's build and its logs, which open.
    link = page.find_element("css selector", f"tr[data-job='{SYSTEM}.cookbook'] a")
    assert link.get_attribute("href").endswith(f"#/builders/{jobs[f'{SYSTEM}.cookbook']['builderid']}/builds/"
                                               f"{jobs[f'{SYSTEM}.cookbook']['number']}")
    log = [a.get_attribute("href") for a in page.find_elements("css selector", f"tr[data-job='{SYSTEM}.cookbook'] a")
           if a.text == "build log"][0]
    assert f"{COOKBOOK_TESTS[1]} passed, 0 failed" in requests.get(log, timeout=30).text


def test_trends_have_two_points_and_mark_the_change(master, commits, page, shots):
    page.get(f"{dashboard(master)}trends.html?branch=main")
    figures = wait(page, "the trend charts", lambda d: {
        f.get_attribute("data-title"): f for f in find(d, "figure.trend")} or None)
    page.save_screenshot(str(shots / "trends.png"))
    new = commits[1][0]
    passed = figures["Tests passed per host tool"]
    assert len(passed.find_elements("css selector", "circle.point")) == 2 * len(
        passed.find_elements("css selector", "ul.legend li"))
    assert [c.get_attribute("data-change") for c in passed.find_elements("css selector", "circle.change")] == [new]
    boot = figures["Boot seconds (boot-complete) per image and VMM"]
    assert len(boot.find_elements("css selector", "circle.point")) == 2
    assert [c.get_attribute("data-change") for c in boot.find_elements("css selector", "circle.change")] == [new]
    # The page runs no script and loads nothing from elsewhere.
    assert not find(page, "script")
    csp = requests.get(f"{dashboard(master)}trends.html?branch=main", timeout=30).headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_badge_says_the_latest_pipeline_result(master, commits):
    r = requests.get(f"{dashboard(master)}badge/main.svg", timeout=30)
    assert r.ok and r.headers["Content-Type"].startswith("image/svg+xml")
    result = {0: "success", 1: "warnings", 2: "failure"}[commits[1][1]["results"]]
    assert f"redox-ci main: {result}" in r.text
    assert requests.get(f"{dashboard(master)}badge/no..such.svg", timeout=30).status_code == 404
