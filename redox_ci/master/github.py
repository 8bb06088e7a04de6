"""The GitHub hook (``/change_hook/github``): only pushes to our flake's branches count.

A hook set on a GitHub organisation sends the pushes of every repository there, and a
hook may be sent any event. Buildbot's own handler records a change for a push to any
repository and any tag (and a push to some other repository's ``main`` starts a Redox
pipeline at that repository's revision), and it answers an event it does not know with
an error, which GitHub shows as a failed delivery.

Here a push becomes changes only when its repository is the configured flake repository
and its ref is a configured branch, or a tag that ``[flake].tags`` names. Anything else
(another repository, another branch, a tag, a deletion, a ``ping``, a ``pull_request``)
is answered 200 with a line saying it was ignored and why, and records nothing. The
signature check, the parsing of the payload and the changes of a push that counts stay
Buildbot's (``GitHubEventHandler``); this subclass decides which deliveries reach them.
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from buildbot.util import bytes2unicode
from buildbot.www.hooks.github import GitHubEventHandler
from twisted.internet import defer
from twisted.python import log

from .. import names
from ..config import FlakeSettings

TAG_PREFIX = "refs/tags/"
BRANCH_PREFIX = "refs/heads/"
# Where a payload's repository names its URLs.
URL_FIELDS = ("clone_url", "ssh_url", "git_url", "html_url", "svn_url", "url")
# "owner/name" on github.com, however a URL or flake reference spells it: https or
# ssh URL (git+ prefixed for Nix or not, .git or not), scp-like git@github.com:o/n,
# or the flake reference github:o/n (with a /branch or ?ref= after it).
_GITHUB = [re.compile(p, re.IGNORECASE) for p in (
    r"(?:git\+)?(?:https?|ssh|git)://(?:[^@/]+@)?(?:www\.)?github\.com(?::\d+)?/([^/]+/[^/]+?)(?:\.git)?/?",
    r"(?:[^@/:]+@)?github\.com:([^/]+/[^/]+?)(?:\.git)?/?",
    r"github:([^/]+/[^/]+)(?:/.*)?",
)]


def github_name(repo: str) -> str | None:
    """``owner/name`` (lower case: GitHub's names are case-insensitive) of a github.com
    repository URL or flake reference; None for anything else (a path, another host)."""
    bare = re.split(r"[?#]", repo.strip(), maxsplit=1)[0]
    for pattern in _GITHUB:
        m = pattern.fullmatch(bare)
        if m:
            return m.group(1).lower()
    return None


def _plain(url: str) -> str:
    """A URL or path as compared: no git+ or file:// prefix, no trailing / or .git."""
    url = url.strip().removeprefix("git+").removeprefix("file://")
    return url.rstrip("/").removesuffix(".git")


@dataclass(frozen=True)
class OurRefs:
    """What the hook (and the commit scheduler) builds: the flake repository's branches,
    and the tags that match ``[flake].tags``."""

    repo: str
    branches: tuple[str, ...]
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, flake: FlakeSettings) -> OurRefs:
        return cls(flake.repo, tuple(flake.branches), tuple(flake.tags))

    def is_ours(self, repository: dict) -> bool:
        """The payload's repository is the flake repository: by ``full_name`` when the
        settings name a github.com repository (and the payload is github.com's), else by
        its clone URLs."""
        ours = github_name(self.repo)
        if ours:
            full_name, page = repository.get("full_name"), repository.get("html_url")
            on_github = not isinstance(page, str) or github_name(page) is not None
            return isinstance(full_name, str) and full_name.lower() == ours and on_github
        urls = {_plain(u) for f in URL_FIELDS if isinstance(u := repository.get(f), str)}
        return _plain(self.repo) in urls

    def builds_tag(self, tag: str) -> bool:
        return any(fnmatchcase(tag, p) for p in self.tags) and names.BRANCH.fits(TAG_PREFIX + tag)

    def builds_branch(self, branch: str | None) -> bool:
        """For the commit scheduler: a change's branch as the poller and this hook record it
        (a branch name, or ``refs/tags/<tag>`` for a tag)."""
        if branch is None:
            return False
        if branch.startswith(TAG_PREFIX):
            return self.builds_tag(branch.removeprefix(TAG_PREFIX))
        return branch in self.branches

    def what(self) -> str:
        tags = f" and tags {', '.join(self.tags)}" if self.tags else ""
        return f"pushes to {self.repo} on {', '.join(self.branches)}{tags}"


def push_ignored(payload: dict, ours: OurRefs) -> str | None:
    """Why a push is ignored, as a sentence; None when it counts."""
    repository = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    theirs = repository.get("full_name") or repository.get("clone_url") or "an unnamed repository"
    if not ours.is_ours(repository):
        return f"a push to {theirs}, not to {ours.repo}"
    ref = payload.get("ref") if isinstance(payload.get("ref"), str) else ""
    if payload.get("deleted"):
        return f"{ref} of {theirs} was deleted: there is nothing to build"
    if ref.startswith(BRANCH_PREFIX):
        branch = ref.removeprefix(BRANCH_PREFIX)
        if branch in ours.branches:
            return None
        return f"branch {branch} is not one of the branches built ({', '.join(ours.branches)})"
    if ref.startswith(TAG_PREFIX):
        tag = ref.removeprefix(TAG_PREFIX)
        if ours.builds_tag(tag):
            return None
        if not ours.tags:
            return f"tag {tag}: tags are not built ([flake].tags names none)"
        return f"tag {tag} matches none of [flake].tags ({', '.join(ours.tags)})"
    return f"ref {ref or '(none)'} is neither a branch nor a tag"


def event_ignored(event: str, payload: dict, ours: OurRefs) -> str | None:
    """The answer to a delivery that records nothing; None for a push that counts."""
    if event == "push":
        reason = push_ignored(payload, ours)
        return f"ignored: {reason}" if reason else None
    if event == "ping":
        hook = payload.get("hook") if isinstance(payload.get("hook"), dict) else {}
        where = (payload.get("repository") or {}).get("full_name") or (payload.get("organization") or {}).get("login")
        on = f" on {where}" if where else ""
        return (f"pong: redox-ci hears this {hook.get('type', 'GitHub')} hook{on}; "
                f"it builds {ours.what()}, and ignores every other event")
    if not event:
        return "ignored: not a GitHub event (no X-GitHub-Event header)"
    return f"ignored: {event} events start nothing; redox-ci builds {ours.what()}"


class OurPushesOnly(GitHubEventHandler):
    """Buildbot's GitHub handler, given only the pushes that ``OurRefs`` builds."""

    def __init__(self, secret, strict, *, ours: OurRefs, **kwargs):
        super().__init__(secret, strict, **kwargs)
        self.ours = ours

    @defer.inlineCallbacks
    def process(self, request):
        # Buildbot's: the signature (strict: required), the content type, the JSON.
        payload = yield self._get_payload(request)
        event = bytes2unicode(request.getHeader(b"X-GitHub-Event") or b"")
        answer = event_ignored(event, payload, self.ours)
        if answer is not None:
            log.msg(f"GitHub hook: {answer}")
            # 200, as Buildbot answers a delivery it took (its 202 comes after the body has
            # started); the change hook adds "no change found" after this line.
            request.write(html.escape(answer + "\n", quote=False).encode())
            return [], "git"
        changes, src = yield defer.maybeDeferred(self.handle_push, payload, event)
        return changes, src

    def handle_push(self, payload, event):
        changes, src = super().handle_push(payload, event)
        for change in changes:
            # Buildbot records a tag as its bare name; the plan fetches refs/tags/<tag>,
            # and the commit scheduler tells it from a branch of the same name.
            if change.get("category") == "tag":
                change["branch"] = TAG_PREFIX + change["branch"]
        return changes, src


def dialect(flake: FlakeSettings) -> functools.partial:
    """The ``class`` of the github change hook dialect: Buildbot calls it with its own
    arguments (secret, strict, master, ...)."""
    return functools.partial(OurPushesOnly, ours=OurRefs.of(flake))
