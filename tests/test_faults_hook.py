"""Faults at the GitHub hook (issue 11, item 5), against a real master and its worker
processes: a delivery signed only with SHA-1 (or not at all), a replayed delivery (the same
``X-GitHub-Delivery``, or the same signed body under a new id) and an oversized payload are
answered without recording a change or queueing a build request. The rules' units:
test_github_hook.py."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import pytest
import requests

from redox_ci.fixture import git
from redox_ci.master.github import MAX_PAYLOAD_BYTES
from tests.master_support import running_master

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parent / "data" / "github"


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    yield from running_master(tmp_path_factory, "faults-hook", worker_kind="remote", github_webhook=True)


def our_push(master) -> dict:
    """GitHub's example push, made a push of the fixture repository's HEAD to main."""
    repo = master.setup.repo
    payload = copy.deepcopy(json.loads((EXAMPLES / "push.json").read_text()))
    payload["repository"].update(
        name=repo.name, full_name=f"redox/{repo.name}", html_url=str(repo), url=str(repo),
        clone_url=str(repo), git_url=f"file://{repo}", ssh_url=str(repo), svn_url=str(repo))
    head = git(repo, "rev-parse", "HEAD")
    payload.update(ref="refs/heads/main", created=False, after=head)
    payload["head_commit"]["id"] = payload["commits"][0]["id"] = head
    return payload


def deliver(master, body: bytes, *, sha256: bool = True, sha1: bool = True,
            delivery: str | None = None, secret: str | None = None) -> requests.Response:
    secret = (secret or master.webhook_secret).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "User-Agent": "GitHub-Hookshot/redox-ci-test", "Content-Type": "application/json"}
    if sha256:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if sha1:
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()
    return requests.post(master.url + "change_hook/github", data=body, headers=headers, timeout=60)


def recorded(master) -> tuple[int, int]:
    """How many changes and build requests the master holds."""
    return len(master.api("changes")["changes"]), len(master.api("buildrequests")["buildrequests"])


def test_webhook_sha256_is_required(master):
    body = json.dumps(our_push(master)).encode()
    before = recorded(master)
    r = deliver(master, body, sha256=False)  # what Buildbot alone accepts
    assert r.status_code == 400 and "X-Hub-Signature-256 is missing" in r.text, r.text
    r = deliver(master, body, sha256=False, sha1=False)
    assert r.status_code == 400 and "no required signature" in r.text, r.text
    r = deliver(master, body, secret="not-the-secret")
    assert r.status_code == 400 and "Hash mismatch" in r.text, r.text
    assert recorded(master) == before


def test_webhook_sha256_payload_over_the_limit_is_refused(master):
    before = recorded(master)
    body = json.dumps(our_push(master) | {"padding": "x" * MAX_PAYLOAD_BYTES}).encode()
    r = deliver(master, body)
    assert r.status_code == 400 and f"over the limit of {MAX_PAYLOAD_BYTES}" in r.text, r.text
    assert recorded(master) == before


def test_webhook_replay_is_answered_and_queues_nothing(master):
    body = json.dumps(our_push(master) | {"before": "1" * 40}).encode()
    delivery = str(uuid.uuid4())
    r = deliver(master, body, delivery=delivery)
    assert r.status_code == 200 and r.text == "1 change found", r.text
    after_first = recorded(master)
    r = deliver(master, body, delivery=delivery)  # the same delivery again
    assert r.status_code == 200 and r.text.startswith(f"already seen: delivery {delivery}"), r.text
    r = deliver(master, body)  # the same signed body under a new id (the id is not signed)
    assert r.status_code == 200 and "already seen" in r.text, r.text
    assert recorded(master)[0] == after_first[0]
    # Nothing queued by the replays: no build request beyond the first delivery's pipeline
    # (its plan may still add job requests, all children of that one plan build).
    plan = master.builder_id("redox/plan")
    top = [bs for bs in master.api("buildsets")["buildsets"] if bs["parent_buildid"] is None]
    plans = [r for r in master.api("buildrequests")["buildrequests"] if r["builderid"] == plan]
    assert len(top) == len(plans)


def test_webhook_replay_after_a_restart_is_still_seen(master):
    body = json.dumps(our_push(master) | {"before": "2" * 40}).encode()
    delivery = str(uuid.uuid4())
    r = deliver(master, body, delivery=delivery)
    assert r.status_code == 200 and r.text == "1 change found", r.text
    master.stop()  # the delivery ids are kept in the master's database
    master.start()
    before = recorded(master)
    r = deliver(master, body, delivery=delivery)
    assert r.status_code == 200 and r.text.startswith(f"already seen: delivery {delivery}"), r.text
    assert recorded(master)[0] == before[0]
