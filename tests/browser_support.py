"""Headless Chromium (from Debian) driven by Selenium, acting as a person in the web UI.

Buildbot's React UI logs in with UserPasswordAuth through HTTP Basic auth: the
"Anonymous" menu has a "Login" link to ``auth/login?redirect=...``, the server
answers 401 and the browser asks for a user name and password in its own dialog.
A headless browser has no dialog, so :func:`log_in` answers the browser's
authentication challenge over WebDriver BiDi (``network.authRequired``), which is
what typing into that dialog does. The page load strategy is "none": ChromeDriver
holds classic commands while a navigation waits on an authentication challenge,
and would then never deliver the BiDi answer; every test waits for what it needs
to see instead.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Wide enough that the navbar does not collapse into its burger menu.
    "--window-size=1400,1000",
]
# Guard against a hung page; generous because a 2-core machine also runs the master and Nix.
UI_WAIT_SECONDS = 60
# A build of one attribute through plan and job builders, with room for a cold Nix store.
BUILD_WAIT_SECONDS = 300


def require_browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.skip(f"{path} is missing (scripts/install.sh installs chromium and chromium-driver)")


def chromium_args(user_data_dir: Path) -> list[str]:
    return [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]


@contextmanager
def browser():
    """A fresh headless Chromium with a profile of its own, quit and removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="redox-ci-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.enable_bidi = True
    options.page_load_strategy = "none"
    for arg in chromium_args(profile):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, what: str, check, timeout: float = UI_WAIT_SECONDS):
    """Wait until ``check(driver)`` is truthy; fail naming ``what`` otherwise.

    React redraws the page under our feet: an element that went stale means "look again".
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=[StaleElementReferenceException]).until(check)
    except TimeoutException:
        raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s at {driver.current_url}") from None


def click(driver, what: str, finder) -> None:
    """Click the first element ``finder(driver)`` returns, looking again if it was redrawn."""
    def clicked(d):
        found = finder(d)
        if found:
            found[0].click()
        return bool(found)
    wait(driver, what, clicked)


def find(driver, css: str):
    """The elements matching ``css`` (a list, empty when none)."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def find_xpath(driver, xpath: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.XPATH, xpath)


def button(driver, label: str):
    """The visible buttons whose text is ``label``."""
    return [b for b in find_xpath(driver, f"//button[normalize-space()='{label}']") if b.is_displayed()]


def login_name(driver) -> str | None:
    """Who the navbar says is logged in ("Anonymous" or the user name)."""
    menu = find(driver, "#bb-loginbar-dropdown")
    return menu[0].text.strip() if menu else None


def log_in(driver, url: str, user: str, password: str) -> None:
    """Log in as a person does: Anonymous menu, Login, answer the browser's Basic-auth prompt."""
    driver.get(url)
    wait(driver, "the login menu", lambda d: login_name(d) == "Anonymous")
    answered = threading.Event()

    def on_challenge(challenge):
        challenge.provide_credentials(user, password)

    def on_response(event):
        # The server answers the credentials with a redirect (or a 401 if they are wrong);
        # once that response is in, the challenge has been answered.
        response = event.response or {}
        if "auth/login" in response.get("url", "") and response.get("status") != 401:
            answered.set()

    handler = driver.network.add_authentication_handler(on_challenge)
    listener = driver.network.add_event_handler("response_completed", on_response)
    try:
        click(driver, "the login menu", lambda d: find(d, "#bb-loginbar-dropdown"))
        link = wait(driver, "the Login link", lambda d: [a for a in find_xpath(d, "//a[contains(., 'Login')]")
                                                          if "auth/login" in (a.get_attribute("href") or "")])
        # A script click: ChromeDriver's own click would wait for the navigation to settle.
        driver.execute_script("arguments[0].click()", link[0])
        if not answered.wait(UI_WAIT_SECONDS):
            raise AssertionError("the browser never got past the login prompt")
    finally:
        driver.network.remove_event_handler("response_completed", listener)
        driver.network.remove_authentication_handler(handler)
    wait(driver, f"the navbar to show {user}", lambda d: login_name(d) == user)
