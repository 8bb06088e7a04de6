"""The Commits page's rules without a master: grouping, the job table, trends, SVG, badges.

Inputs are shaped as Buildbot's data API returns them (build dicts, properties with
their sources) and as the steps set them, in both property contracts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from redox_ci.master.commits import (JobBuild, Outcome, Pipeline, Series, commits_of, job_facts, job_rows,
                                     reason_of, repro_verdicts, time_tolerance, trends, unsourced)
from redox_ci.master.commits_view import Urls, commit_page, trends_page
from redox_ci.master.svg import Line, badge, line_chart
from redox_ci.plan import Job, JobStatus

pytestmark = pytest.mark.unit

SUCCESS, WARNINGS, FAILURE, SKIPPED = 0, 1, 2, 3
REV1, REV2 = "a" * 40, "b" * 40
SVG = "{http://www.w3.org/2000/svg}"


def plan_build(buildid: int, started: int, results: int = SUCCESS) -> dict:
    return {"buildid": buildid, "builderid": 1, "number": buildid, "started_at": started,
            "complete_at": started + 60, "complete": True, "results": results, "state_string": "finished"}


def pipeline(buildid: int, started: int, rev: str, branch: str = "main", forced: bool = False,
             plan: dict | None = None, results: int = SUCCESS) -> Pipeline:
    props = {"branch": branch, "revision": rev, "scheduler": "force" if forced else "commits", "plan": plan}
    return Pipeline.of(plan_build(buildid, started, results), props)


def job_build(buildid: int, props: dict, results: int = SUCCESS, state: str = "", seconds: int = 5) -> JobBuild:
    build = {"buildid": buildid, "builderid": 100 + buildid, "number": 1, "started_at": 1000,
             "complete_at": 1000 + seconds, "complete": True, "results": results, "state_string": state}
    return JobBuild(build, props, url=f"http://ci/#/builders/{100 + buildid}/builds/1")


def old_job(attr: str, stage: str = "host-tools", **more) -> dict:
    return {"attr": attr, "system": "x86_64-linux", "stage": stage, "job_status": "build", "job_reason": "",
            "aliases": [], "virtual_builder_name": f"x86_64-linux.{attr}", **more}


def test_commit_page_groups_forced_builds_under_their_revision():
    ps = [pipeline(1, 100, REV1), pipeline(2, 200, REV2), pipeline(3, 300, REV1, forced=True),
          pipeline(4, 400, "", forced=True), pipeline(5, 500, REV2, branch="other")]
    commits = commits_of(ps, "main")
    # Newest first by first pipeline; a later forced build of REV1 does not move it up.
    assert [c.revision for c in commits] == ["", REV2, REV1]
    assert [p.buildid for p in commits[2].pipelines] == [3, 1]
    assert commits[2].latest.forced
    assert commits[0].latest.buildid == 4  # forced at the tip, no plan yet: a commit of its own
    # Forced at the tip: under the revision its plan evaluated.
    tip = pipeline(6, 600, "", forced=True, plan={"flake": "f", "jobs": [], "revision": REV2})
    assert [[p.buildid for p in c.pipelines] for c in commits_of([*ps, tip], "main")][:2] == [[4], [6, 2]]


def test_commit_page_reads_both_property_contracts():
    old = job_facts(old_job("cookbook", tests_passed=9, tests_failed=0, tests_ignored=1, cache_pushed=2,
                            cache_skipped=3))
    assert (old.job.attr, old.tests.passed, old.tests.ignored, old.tests.kind, old.cache) == \
        ("cookbook", 9, 1, "cargo", (2, 3))
    job = Job("boot-qemu", "x86_64-linux", "boot", None, False, JobStatus.BUILD)
    new = job_facts(unsourced({
        "job": (job.to_json(), "Trigger"),
        "boot_result": ({"verdict": "pass", "reason": "shell", "vmm": "qemu", "accel": "tcg", "attr": "redox-default",
                         "milestones": [{"name": "kernel", "at": 1.5}, {"name": "boot-complete", "at": 3.25}],
                         "tests": {"prefix": "FUNC_TEST", "passed": 3, "failed": 1, "skipped": 1}}, "BootStep")}))
    assert new.boot.seconds == 3.25 and new.boot.image == "redox-default"
    assert (new.tests.passed, new.tests.failed, new.tests.ignored, new.tests.kind) == (3, 1, 1, "FUNC_TEST")
    boot_old = job_facts(old_job("boot-qemu", "boot", vmm="qemu", boot_verdict="pass", boot_seconds=4.0))
    assert boot_old.boot.seconds == 4.0 and boot_old.tests is None


def test_commit_page_reads_the_verb_answers_of_a_built_job():
    job = Job("cookbook", "x86_64-linux", "host-tools", "/nix/store/c.drv", True, JobStatus.BUILD,
              aliases=["checks.cookbook-build"])
    facts = job_facts({"job": job.to_json(),
                       "build_result": {"status": "success", "seconds": 41.5,
                                        "tests": {"passed": 9, "failed": 0, "ignored": 2, "suites": 2}},
                       "push_result": {"pushed": ["/nix/store/a", "/nix/store/b"], "skipped": ["/nix/store/c"],
                                       "bytes_uploaded": 10, "seconds": 1.0}})
    assert facts.job.aliases == ["checks.cookbook-build"]
    assert (facts.tests.passed, facts.tests.ignored, facts.tests.kind) == (9, 2, "cargo")
    assert facts.cache == (2, 1) and facts.build_seconds == 41.5 and facts.boot is None


def test_commit_page_table_has_failures_first_and_cached_jobs_from_the_plan():
    cached = Job("relibc", "x86_64-linux", "cross-system", "/nix/store/x.drv", False, JobStatus.CACHED)
    p = pipeline(1, 100, REV1, plan={"flake": "f", "jobs": [cached.to_json()]})
    rows = job_rows(p, [
        job_build(10, old_job("cookbook", tests_passed=9, tests_failed=0)),
        job_build(11, old_job("installer", tests_passed=3, tests_failed=1), FAILURE, "installer: 1 test failed"),
        job_build(12, old_job("boot-cloud-hypervisor", "boot"), SKIPPED, "no worker runs VMs"),
    ], {("x86_64-linux", "cookbook"): ("reproducible", "2026-11-25-aaaaaaa")})
    assert [(r.name, r.outcome) for r in rows] == [
        ("x86_64-linux.installer", Outcome.FAILURE), ("x86_64-linux.cookbook", Outcome.SUCCESS),
        ("x86_64-linux.boot-cloud-hypervisor", Outcome.SKIPPED), ("x86_64-linux.relibc", Outcome.CACHED)]
    assert rows[0].reason == "installer: 1 test failed"
    assert rows[1].repro == ("reproducible", "2026-11-25-aaaaaaa")
    html = commit_page(commits_of([p], "main")[0], p, rows, Urls("http://ci/"))
    assert html.index("x86_64-linux.installer") < html.index("x86_64-linux.cookbook")
    assert "already cached" in html and "reproducible" in html and "<script" not in html


def test_commit_page_lists_planned_jobs_not_started():
    waiting = Job("kernel", "x86_64-linux", "cross-system", "/nix/store/k.drv", False, JobStatus.BUILD)
    plan = {"flake": "f", "jobs": [waiting.to_json()]}
    running = Pipeline.of({**plan_build(1, 100), "complete": False, "results": None},
                          {"branch": "main", "revision": REV1, "plan": plan})
    assert [(r.outcome, r.reason) for r in job_rows(running, [])] == [(Outcome.RUNNING, "waiting for its stage")]
    ended = pipeline(2, 100, REV1, plan=plan, results=FAILURE)
    assert [r.outcome for r in job_rows(ended, [])] == [Outcome.CANCELLED]


@pytest.mark.parametrize("state, reason", [
    ("build successful cookbook: 9 passed", "cookbook: 9 passed"), ("failed installer: tests failed", "installer: tests failed"),
    ("skipped: boot-qemu: no worker", "boot-qemu: no worker"), ("build successful", "build successful"),
    ("failed", "failed"), ("cookbook: built", "cookbook: built")])
def test_commit_page_reason_leaves_out_the_result_words(state, reason):
    assert reason_of(state) == reason


def test_commit_page_escapes_what_builds_say():
    p = pipeline(1, 100, REV1)
    rows = job_rows(p, [job_build(10, old_job("cookbook"), FAILURE, "<img src=x onerror=alert(1)>")])
    html = commit_page(commits_of([p], "main")[0], p, rows, Urls("http://ci/"))
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_commit_page_repro_verdicts_of_the_night_at_that_revision():
    nights = [
        {"date": "2026-11-24", "rev": REV1[:12], "system": "x86_64-linux",
         "results": [{"attr": "cookbook", "status": "unreproducible"}]},
        {"date": "2026-11-25", "rev": REV1[:12], "results": [{"attr": "cookbook", "status": "reproducible"}]},
        {"date": "2026-11-26", "rev": REV2[:12], "results": [{"attr": "cookbook", "status": "unreproducible"}]},
        None, {"not": "a summary"},
    ]
    assert repro_verdicts(nights, REV1, "x86_64-linux") == {
        ("x86_64-linux", "cookbook"): ("reproducible", f"2026-11-25-{REV1[:12]}")}
    assert repro_verdicts(nights, "", "x86_64-linux") == {}


def test_trends_mark_the_commit_where_a_value_changed():
    assert Series("counts", [9, 9, None, 11, 11]).changes() == [3]
    # Times: a few seconds of noise is no change, a doubling is.
    assert Series("boot", [10.0, 11.5, 9.5, 21.0], time_tolerance).changes() == [3]


def test_trends_series_per_host_tool_boot_and_attribute():
    def column(rev, passed, boot_at):
        p = pipeline(1, 100, rev)
        return rev, job_rows(p, [
            job_build(10, old_job("cookbook", tests_passed=passed, tests_failed=0), seconds=7),
            job_build(11, old_job("boot-qemu", "boot", vmm="qemu", boot_verdict="pass", boot_seconds=boot_at)),
        ])
    t = trends([column(REV1, 9, 4.0), column(REV2, 11, 14.0)], image="redox-default")
    assert [(s.label, s.values, s.changes()) for s in t.tests_passed] == [("x86_64-linux.cookbook", [9, 11], [1])]
    assert [(s.label, s.values, s.changes()) for s in t.boot_seconds] == [
        ("redox-default on qemu (x86_64-linux)", [4.0, 14.0], [1])]
    assert [(s.label, s.values) for s in t.build_seconds] == [("x86_64-linux.cookbook", [7.0, 7.0])]
    html = trends_page("main", t, Urls("http://ci/"))
    assert "<script" not in html and f'data-change="{REV2}"' in html


def test_trends_chart_is_valid_svg_with_a_point_per_value_and_a_ring_per_change():
    svg = line_chart("Boot <seconds>", ["r1", "r2", "r3"], [Line("a & b", [1.0, None, 3.0], [2]),
                                                            Line("c", [2.0, 2.0, 2.0])], " s")
    root = ET.fromstring(svg)  # well-formed, labels escaped
    circles = root.iter(f"{SVG}circle")
    classes = [c.get("class") for c in circles]
    assert classes.count("point") == 5 and classes.count("change") == 1
    assert root.find(f"{SVG}title").text == "Boot <seconds>"


def test_badge_is_svg_coloured_by_result():
    svg = badge("redox-ci main", "failure", "failure")
    root = ET.fromstring(svg)
    assert root.get("aria-label") == "redox-ci main: failure"
    assert "#c62828" in svg
    assert "#9e9e9e" in badge("redox-ci x", "no pipeline", "unknown")


@pytest.mark.parametrize("top, ticks", [(12.88, [0, 5, 10, 15]), (9, [0, 2, 4, 6, 8, 10]), (950, [0, 200, 400, 600, 800, 1000]),
                                         (0.4, [0, 0.1, 0.2, 0.3, 0.4]), (0, [0, 1])])
def test_trends_value_axis_has_round_ticks_over_the_largest_value(top, ticks):
    from redox_ci.master.svg import _ticks
    assert _ticks(top) == ticks


def test_trends_counts_have_whole_ticks():
    from redox_ci.master.svg import _ticks
    assert _ticks(1, whole=True) == [0, 1] and _ticks(3, whole=True) == [0, 1, 2, 3]


@pytest.fixture
def app_client():
    from redox_ci.config import Settings
    from redox_ci.master.commits_app import make_app
    settings = Settings.model_validate({"flake": {"repo": "github:redox/flake", "branches": ["main"]}})
    return make_app(settings).test_client()


@pytest.mark.parametrize("path, status", [
    ("/commit.html?rev=not-a-revision", 400), ("/commit.html", 400), ("/commit.html?build=1;drop", 400),
    ("/branch.html?branch=main;%20rm", 400), ("/trends.html?branch=..", 400),
    ("/badge/main", 404), ("/badge/..%2Fetc.svg", 404),
])
def test_commit_page_refuses_bad_parameters_before_reading_anything(app_client, path, status):
    # Refused before the data API is asked: this app has no master behind it.
    r = app_client.get(path)
    assert r.status_code == status
    assert "default-src 'none'" in r.headers.get("Content-Security-Policy", "default-src 'none'")
    assert b"<script" not in r.data


def test_trends_setting_is_checked():
    from pydantic import ValidationError

    from redox_ci.config import WwwSettings
    assert WwwSettings().trend_commits == 20
    with pytest.raises(ValidationError):
        WwwSettings(trend_commits=1)
