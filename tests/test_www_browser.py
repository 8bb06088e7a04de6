"""The web UI in a real browser: log in, force a build through the form, see its result.

A real master with a local worker builds the fixture flake with Nix; headless
Chromium clicks through Buildbot's React UI as a person would. What the browser
shows is checked against the REST API, so a form that sent the wrong fields or
a page that shows a stale result fails the test.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.keys import Keys  # noqa: E402

from tests.browser_support import (BUILD_WAIT_SECONDS, browser, button, click, find, find_xpath, log_in,
                                   login_name, require_browser, wait)
from tests.master_support import running_master

pytestmark = pytest.mark.e2e

SUCCESS = 0
RESULT_NAMES = {"SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED"}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    require_browser()
    yield from running_master(tmp_path_factory, "www", worker_kind="local")


@pytest.fixture(scope="module")
def admin(master):
    with browser() as driver:
        log_in(driver, master.url, "admin", master.admin_password)
        yield driver


@pytest.fixture
def anonymous(master):
    with browser() as driver:
        yield driver


def request_count(master, **filters) -> int:
    return len(master.api("buildrequests", **filters)["buildrequests"])


def open_force_form(driver, master) -> None:
    """The plan builder's page, its Force build button, and the form it opens."""
    driver.get(f"{master.url}#/builders/{master.builder_id('redox/plan')}")
    wait(driver, "the builder page without a dialog",
         lambda d: d.current_url.endswith(f"/builders/{master.builder_id('redox/plan')}") and not find(d, ".modal"))
    click(driver, "the Force build button", lambda d: button(d, "Force build"))
    wait(driver, "the force form", lambda d: find(d, "[data-bb-test-id=force-field-attrs]"))


def set_field(driver, name: str, value: str) -> None:
    field = find(driver, f"[data-bb-test-id=force-field-{name}]")[0]
    # Select and overwrite: React sees key presses, not a value set behind its back.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value)


def keep_systems(driver, keep: list[str]) -> None:
    """Remove every system chip of the multi-select that is not in ``keep``."""
    def drop_one(d):
        extra = [c for c in find(d, "[data-bb-test-id=force-field-systems] [aria-label^='Remove ']")
                 if c.get_attribute("aria-label").removeprefix("Remove ") not in keep]
        if extra:
            extra[0].click()
        return not extra
    wait(driver, f"the systems other than {keep} removed", drop_one)
    wait(driver, f"the systems {keep} shown", lambda d: [
        c.text for c in find(d, "[data-bb-test-id=force-field-systems] [class*=multiValue]")] == keep)


def submit(driver) -> None:
    click(driver, "Start build", lambda d: button(d, "Start build"))


def modal_text(driver) -> str:
    modal = find(driver, ".modal")
    return modal[0].text if modal else ""


@pytest.fixture(scope="module")
def forced(master, admin, tmp_path_factory):
    """A build of cookbook on x86_64-linux, forced through the form by the admin."""
    shots = tmp_path_factory.mktemp("screenshots")
    plan_id = master.builder_id("redox/plan")
    before = request_count(master, builderid=plan_id)
    open_force_form(admin, master)
    set_field(admin, "attrs", "cookbook")
    keep_systems(admin, ["x86_64-linux"])
    admin.save_screenshot(str(shots / "force-form.png"))
    submit(admin)
    # The UI goes to the new build's page.
    page = wait(admin, "the new build's page",
                lambda d: re.search(rf"#/builders/{plan_id}/builds/(\d+)$", d.current_url))
    number = int(page.group(1))
    badge = wait(admin, "the build's result in its page", lambda d: [
        b for b in find(d, ".bb-build-summary .card-header .bb-badge-status") if b.text in RESULT_NAMES],
        timeout=BUILD_WAIT_SECONDS)[0].text
    admin.save_screenshot(str(shots / "build.png"))
    build = master.api(f"builders/{plan_id}/builds/{number}", property="*")["builds"][0]
    return {"number": number, "badge": badge, "build": build, "before": before, "shots": shots}


def test_admin_is_logged_in(admin):
    assert login_name(admin) == "admin"


def test_force_form_starts_the_build_it_was_given(master, forced):
    build = forced["build"]
    assert request_count(master, builderid=build["builderid"]) == forced["before"] + 1
    # The form's fields reached the build, not their defaults.
    assert build["properties"]["attrs"][0] == "cookbook"
    assert build["properties"]["systems"][0] == ["x86_64-linux"]
    assert build["properties"]["owner"][0] == "admin"
    assert build["complete"]


def test_build_page_shows_the_result_and_the_triggered_job(master, admin, forced):
    build = forced["build"]
    assert build["results"] == SUCCESS
    assert forced["badge"] == "SUCCESS"
    jobs = master.jobs(build["buildid"])
    assert list(jobs) == ["x86_64-linux.cookbook"]
    job = jobs["x86_64-linux.cookbook"]
    assert job["results"] == SUCCESS
    # Open the stage step: the triggered job is listed with its summary and result.
    click(admin, "the host-tools stage step", lambda d: [
        li.find_element("css selector", "svg.clickable")
        for li in find(d, "li.bb-build-summary-step-line") if "stage host-tools" in li.text])
    child = wait(admin, "the triggered job in the stage", lambda d: [
        c for c in find(d, ".group-results .bb-build-summary") if "x86_64-linux.cookbook" in c.text])[0]
    admin.save_screenshot(str(forced["shots"] / "stage.png"))
    assert job["state_string"] in child.text
    assert "9 passed, 0 failed" in child.text
    assert child.find_element("css selector", ".bb-badge-status").text == "SUCCESS"


@pytest.mark.parametrize("field, value, label, rule", [
    ("attrs", "x; rm -rf /", "Attributes", "Nix attribute names"),
    ("branch", "main; rm -rf /", "Branch", "a git branch name"),
])
def test_hostile_value_is_refused_in_the_form(master, admin, forced, field, value, label, rule):
    before = request_count(master)
    open_force_form(admin, master)
    set_field(admin, field, value)
    submit(admin)
    error = wait(admin, "the field's error message", lambda d: [
        line for line in modal_text(d).splitlines() if "refused" in line])
    admin.save_screenshot(str(forced["shots"] / f"refused-{field}.png"))
    # The message says what is allowed, in words, not as a regular expression.
    assert error[0].startswith(label) and rule in error[0] and "\\Z" not in error[0]
    # The form stays open and nothing was requested.
    assert find(admin, ".modal")
    assert request_count(master) == before
    click(admin, "Cancel", lambda d: button(d, "Cancel"))


def test_anonymous_force_is_refused(master, anonymous, forced):
    anonymous.get(master.url)
    wait(anonymous, "the navbar", lambda d: login_name(d) == "Anonymous")
    before = request_count(master)
    open_force_form(anonymous, master)
    set_field(anonymous, "attrs", "cookbook")
    submit(anonymous)
    wait(anonymous, "the authorization error", lambda d: "you need to have role 'admins'" in modal_text(d))
    anonymous.save_screenshot(str(forced["shots"] / "anonymous-force.png"))
    assert request_count(master) == before


def test_anonymous_rebuild_starts_nothing(master, anonymous, forced):
    plan_id = master.builder_id("redox/plan")
    anonymous.get(f"{master.url}#/builders/{plan_id}/builds/{forced['number']}")
    wait(anonymous, "the Rebuild button", lambda d: button(d, "Rebuild"))
    before = request_count(master)
    click(anonymous, "the Rebuild button", lambda d: button(d, "Rebuild"))
    # The server refuses (403); Buildbot 4.3's page shows no message, so look at the log.
    wait(anonymous, "the refused rebuild", lambda d: [
        e for e in d.get_log("browser") if f"api/v2/builds/{forced['build']['buildid']}" in e["message"]
        and "403" in e["message"]])
    assert request_count(master) == before


@pytest.mark.parametrize("view, shows", [
    ("Waterfall View", ["redox/plan", "x86_64-linux.cookbook"]),
    # Forced builds carry no change; these views list builds by change and say so.
    ("Console View", ["Console View needs a changesource"]),
    ("Grid View", ["Grid View needs a changesource"]),
])
def test_views_load(master, anonymous, forced, view, shows):
    anonymous.get(master.url)
    click(anonymous, f"the {view} link", lambda d: [
        a for a in find(d, "a.bb-sidebar-item") if a.text.strip() == view])
    for text in shows:
        wait(anonymous, f"{text!r} in the {view}", lambda d: find_xpath(d, f"//*[contains(text(), '{text}')]"))
    errors = [e["message"] for e in anonymous.get_log("browser")
              if e["level"] == "SEVERE" and e["source"] == "javascript"]
    assert not errors, errors
