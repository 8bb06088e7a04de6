"""The GitHub hook's rules on GitHub's own example payloads (tests/data/github): which
repository is ours however the settings name it, which pushes count, what every other
delivery is answered. The hook in a running master: test_production_master.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest

from redox_ci.config import FlakeSettings, Settings
from redox_ci.master.github import (Deliveries, OurPushesOnly, OurRefs, event_ignored, github_name, push_ignored,
                                    signature_problem)
from redox_ci.master.schedulers import commit_scheduler
from redox_ci.master.www import www_config

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).parent / "data" / "github"
HELLO = "https://github.com/Codertocat/Hello-World"
OURS = "https://github.com/brittonr/redoxos-nix"


def example(name: str, **changes) -> dict:
    payload = json.loads((EXAMPLES / name).read_text())
    payload.update(changes)
    return payload


@pytest.mark.parametrize("repo", [
    "https://github.com/brittonr/redoxos-nix", "https://github.com/brittonr/redoxos-nix.git",
    "https://github.com/brittonr/redoxos-nix/", "http://www.github.com/brittonr/redoxos-nix",
    "git+https://github.com/brittonr/redoxos-nix?ref=main", "ssh://git@github.com/brittonr/redoxos-nix.git",
    "git+ssh://git@github.com:22/brittonr/redoxos-nix", "git@github.com:brittonr/redoxos-nix.git",
    "github:brittonr/redoxos-nix", "github:brittonr/redoxos-nix/main", "github:brittonr/redoxos-nix?ref=main",
    "GitHub:BrittonR/RedoxOS-Nix",
])
def test_a_github_repository_however_the_settings_name_it(repo):
    assert github_name(repo) == "brittonr/redoxos-nix"


@pytest.mark.parametrize("repo", [
    "/srv/redox-flake", "file:///srv/redox-flake", "https://gitlab.com/brittonr/redoxos-nix",
    "https://github.com.example.org/brittonr/redoxos-nix", "https://github.com/brittonr",
    "git+https://ghe.example.org/brittonr/redoxos-nix",
])
def test_not_a_github_repository(repo):
    assert github_name(repo) is None


@pytest.mark.parametrize("repo", [HELLO, "git@github.com:codertocat/hello-world.git", "github:Codertocat/Hello-World"])
def test_the_payloads_repository_is_ours_by_its_full_name(repo):
    assert OurRefs(repo, ("master",)).is_ours(example("push.json")["repository"])


def test_another_repository_is_not_ours():
    assert not OurRefs(OURS, ("main",)).is_ours(example("push.json")["repository"])


def test_the_same_name_on_another_github_server_is_not_ours():
    repository = example("push.json")["repository"]
    repository["html_url"] = "https://ghe.example.org/Codertocat/Hello-World"
    assert not OurRefs(HELLO, ("master",)).is_ours(repository)


@pytest.mark.parametrize("repo", ["/srv/redox-flake", "/srv/redox-flake/", "file:///srv/redox-flake",
                                  "/srv/redox-flake.git"])
def test_elsewhere_a_repository_is_ours_by_its_clone_url(repo):
    repository = {**example("push.json")["repository"], "clone_url": "/srv/redox-flake"}
    assert OurRefs(repo, ("main",)).is_ours(repository)
    assert not OurRefs("/srv/other-flake", ("main",)).is_ours(repository)


def test_a_push_to_a_configured_branch_of_ours_counts():
    assert push_ignored(example("push.json"), OurRefs(HELLO, ("master",))) is None


def test_a_push_to_another_repository_is_ignored_even_to_our_branch():
    reason = push_ignored(example("push.json", ref="refs/heads/main"), OurRefs(OURS, ("main",)))
    assert reason == f"a push to Codertocat/Hello-World, not to {OURS}"


def test_a_push_to_another_branch_is_ignored():
    reason = push_ignored(example("push.json"), OurRefs(HELLO, ("main", "release")))
    assert reason == "branch master is not one of the branches built (main, release)"


def test_tags_are_ignored_unless_the_settings_name_them():
    tag = example("push-tag.json")
    assert push_ignored(tag, OurRefs(HELLO, ("master",))) == \
        "tag simple-tag: tags are not built ([flake].tags names none)"
    assert push_ignored(tag, OurRefs(HELLO, ("master",), ("v*",))) == \
        "tag simple-tag matches none of [flake].tags (v*)"
    assert push_ignored(tag, OurRefs(HELLO, ("master",), ("v*", "simple-*"))) is None


def test_deletions_are_ignored():
    ours = OurRefs(HELLO, ("main",), ("simple-*",))
    assert push_ignored(example("push-delete-tag.json"), ours) == \
        "refs/tags/simple-tag of Codertocat/Hello-World was deleted: there is nothing to build"
    assert "refs/heads/main of Codertocat/Hello-World was deleted" in \
        push_ignored(example("push-delete-tag.json", ref="refs/heads/main"), ours)


def test_other_refs_are_ignored():
    assert push_ignored(example("push.json", ref="refs/pull/1/head"), OurRefs(HELLO, ("master",))) == \
        "ref refs/pull/1/head is neither a branch nor a tag"


def test_ping_gets_a_friendly_answer():
    ours = OurRefs(OURS, ("main",))
    answer = event_ignored("ping", example("ping.json"), ours)
    assert answer.startswith("pong: redox-ci hears this Repository hook on Octocoders/Hello-World")
    assert f"it builds pushes to {OURS} on main" in answer
    assert "Organization hook on Octocoders" in event_ignored("ping", example("ping-organization.json"), ours)


def test_other_events_are_answered_without_a_change():
    ours = OurRefs(OURS, ("main",))
    assert event_ignored("pull_request", {}, ours) == \
        f"ignored: pull_request events start nothing; redox-ci builds pushes to {OURS} on main"
    assert event_ignored("", {}, ours) == "ignored: not a GitHub event (no X-GitHub-Event header)"
    assert event_ignored("push", example("push.json"), OurRefs(HELLO, ("master",))) is None


def handler(ours: OurRefs) -> OurPushesOnly:
    """The www dialect's class, made the way Buildbot's GitHubHandler makes it."""
    settings = Settings(flake=FlakeSettings(repo=ours.repo, branches=list(ours.branches), tags=list(ours.tags)),
                        www={"github_webhook": True})
    klass = www_config(settings, {"admin": "pw"})["change_hook_dialects"]["github"]["class"]
    return klass("secret", True, master=None, codebase=None, github_property_whitelist=None, skips=None,
                 github_api_endpoint="https://api.github.com", pullrequest_ref="merge", token=None,
                 debug=False, verify=True)


def test_the_www_dialect_uses_the_handler_with_the_flake_settings():
    h = handler(OurRefs(OURS, ("main",)))
    assert isinstance(h, OurPushesOnly) and h.ours == OurRefs(OURS, ("main",))


def test_a_tag_that_counts_is_recorded_as_its_full_ref():
    changes, src = handler(OurRefs(HELLO, ("master",), ("simple-*",))).handle_push(example("push-tag.json"), "push")
    assert src == "git" and [c["branch"] for c in changes] == ["refs/tags/simple-tag"]
    assert changes[0]["revision"] == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


def test_a_branch_push_is_buildbots_change():
    changes, _ = handler(OurRefs(HELLO, ("master",))).handle_push(example("push.json"), "push")
    assert [(c["branch"], c["revision"], c["repository"]) for c in changes] == \
        [("master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", HELLO)]


def test_the_commit_scheduler_takes_the_branches_and_the_named_tags():
    def takes(branch: str | None, tags: list[str]) -> bool:
        settings = Settings(flake=FlakeSettings(repo=OURS, branches=["main"], tags=tags))
        change = SimpleNamespace(branch=branch, project="", repository=OURS, category=None, codebase="",
                                 properties={})
        # The filter as the scheduler is configured with it (Buildbot applies it at reconfig).
        change_filter = commit_scheduler(settings, "redox/plan")._config_kwargs["change_filter"]
        return change_filter.filter_change(change)
    assert takes("main", []) and not takes("dev", []) and not takes(None, [])
    assert not takes("refs/tags/v1.0", []) and takes("refs/tags/v1.0", ["v*"])
    assert not takes("v1.0", ["v*"])  # a tag is recorded as refs/tags/<tag>, never bare


def test_tag_patterns_are_checked():
    assert FlakeSettings(repo=OURS, tags=["v*", "release-[0-9]*"]).tags == ["v*", "release-[0-9]*"]
    with pytest.raises(pydantic.ValidationError, match="not a tag pattern"):
        FlakeSettings(repo=OURS, tags=["v1 && rm"])


def test_only_a_sha256_signature_of_the_body_with_the_secret_passes():
    body = b'{"ref": "refs/heads/main"}'
    good = "sha256=" + hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert signature_problem(body, good.encode(), "secret") is None
    assert "X-Hub-Signature-256 is missing" in signature_problem(body, None, "secret")
    assert "Hash mismatch" in signature_problem(body + b" ", good.encode(), "secret")
    assert "Hash mismatch" in signature_problem(body, good.encode(), "other")
    sha1 = "sha1=" + hmac.new(b"secret", body, hashlib.sha1).hexdigest()
    assert "must be sha256=<hex>" in signature_problem(body, sha1.encode(), "secret")


def test_deliveries_are_remembered_by_any_key_the_oldest_forgotten_first():
    seen = Deliveries(limit=4)
    assert seen.first_time(["body a", "id 1"]) and seen.first_time(["body b", "id 2"])
    assert not seen.first_time(["body a", "id 3"]) and not seen.first_time(["body c", "id 2"])
    seen.forget(["body b", "id 2"])
    assert seen.first_time(["body b", "id 2"])
    assert seen.first_time(["body c", "id 3"])  # four keys at most: a's are forgotten
    assert seen.first_time(["body a", "id 1"])
    seen.load(["body z", "body c"])  # kept from before: older than any remembered now
    assert seen.keys() == ["body c", "id 3", "body a", "id 1"]
