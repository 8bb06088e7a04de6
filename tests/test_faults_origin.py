"""A cross-origin control request (issue 11, item 10 of the list), against a real master
and its worker processes: Buildbot answers a request whose ``Origin`` is not the master's
own (``buildbotURL``) with 400 "invalid origin", even from a logged-in admin, so a page
elsewhere cannot make an admin's browser force a build. Nothing is queued; the same
request from the master's own origin is taken."""

from __future__ import annotations

import pytest

from tests.master_support import running_master

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "faults-origin", worker_kind="remote")


def build_requests(master) -> int:
    return len(master.api("buildrequests")["buildrequests"])


@pytest.mark.parametrize("origin", [
    "https://evil.example",
    "http://localhost.evil.example",
    "null",  # a sandboxed frame or a file:// page
])
def test_cross_origin_force_from_a_logged_in_admin_is_refused(master, origin):
    admin = master.login()
    before = build_requests(master)
    admin.headers["Origin"] = origin
    r = master.force(admin, systems=["x86_64-linux"], reason="cross-origin")
    assert r.status_code == 400 and "invalid origin" in r.text, (r.status_code, r.text)
    assert build_requests(master) == before


def test_cross_origin_check_lets_the_masters_own_origin_force(master):
    admin = master.login()
    before = build_requests(master)
    admin.headers["Origin"] = master.url.rstrip("/")
    r = master.force(admin, systems=["x86_64-linux"], reason="same origin")
    assert r.ok and "result" in r.json(), r.text
    assert build_requests(master) == before + 1
