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

Before any of that, a delivery must pass ``check_delivery``: at most ``MAX_PAYLOAD_BYTES``,
signed with ``X-Hub-Signature-256`` (Buildbot checks only the SHA-1 ``X-Hub-Signature``,
which is refused on its own), and neither its ``X-GitHub-Delivery`` id nor its signed body
seen before: a captured delivery sent again is answered 200 "already seen" and records
nothing. The last ``REMEMBERED_DELIVERIES`` are kept in the master's database (Buildbot's
object state), so a restart does not forget them (README "Failures").
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase

from buildbot.process.properties import Properties
from buildbot.util import bytes2unicode, unicode2bytes
from buildbot.www.hooks.github import GitHubEventHandler
from twisted.internet import defer
from twisted.python import log

from .. import names
from ..config import FlakeSettings

# GitHub caps a delivery's payload at 25 MB and drops larger events, so a bigger body is
# not GitHub's; a push is tens of kB, but one that lists thousands of changed files is
# far more, so the limit is GitHub's own rather than a guess at what a push needs.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024
# Deliveries remembered against replay, by id and by signature (two keys each): GitHub
# delivers a few per push, so this is weeks of pushes, and at ~80 bytes a key the list the
# database keeps (rewritten at each delivery taken) stays under 100 kB.
REMEMBERED_DELIVERIES = 1000
# Where the database keeps them (Buildbot's object state).
STATE_OBJECT = ("redox-ci github hook", "OurPushesOnly")
STATE_NAME = "deliveries"
SIGNATURE_HEADER = b"X-Hub-Signature-256"
DELIVERY_HEADER = b"X-GitHub-Delivery"

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


def body_of(request) -> bytes:
    """The raw body, refused (ValueError: Buildbot's hook answers 400 with its text)
    when larger than ``MAX_PAYLOAD_BYTES``."""
    content = request.content
    content.seek(0, 2)
    size = content.tell()
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"refused: payload of {size} bytes is over the limit of {MAX_PAYLOAD_BYTES}")
    content.seek(0)
    return content.read()


def signature_problem(body: bytes, header: bytes | None, secret: str) -> str | None:
    """Why ``X-Hub-Signature-256`` does not sign ``body`` with ``secret``; None when it does."""
    if not header:
        return ("no required signature: X-Hub-Signature-256 is missing (set the hook's secret on "
                "GitHub; the SHA-1 X-Hub-Signature alone is not accepted)")
    kind, _, digest = bytes2unicode(header).partition("=")
    if kind != "sha256" or not digest:
        return "wrong signature format: X-Hub-Signature-256 must be sha256=<hex>"
    mac = hmac.new(unicode2bytes(secret), msg=body, digestmod=hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, digest):
        return "Hash mismatch: X-Hub-Signature-256 does not sign this body with the configured secret"
    return None


class Deliveries:
    """The deliveries seen last, by id and by body signature (at most ``limit`` keys),
    oldest forgotten first."""

    def __init__(self, limit: int = 2 * REMEMBERED_DELIVERIES):
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def keys(self) -> list[str]:
        return list(self._ids)

    def load(self, keys: list[str]) -> None:
        """Keys kept from before (older than any remembered now)."""
        now = self._ids
        self._ids = OrderedDict.fromkeys(k for k in keys if k not in now)
        self._ids.update(now)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def first_time(self, keys: list[str]) -> bool:
        """Remember a delivery by its ``keys``; False when any was remembered already."""
        if any(k in self._ids for k in keys):
            return False
        for k in keys:
            self._ids[k] = None
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def forget(self, keys: list[str]) -> None:
        for k in keys:
            self._ids.pop(k, None)


class OurPushesOnly(GitHubEventHandler):
    """Buildbot's GitHub handler, given only the pushes that ``OurRefs`` builds, and only
    deliveries that ``check_delivery`` lets through."""

    def __init__(self, secret, strict, *, ours: OurRefs, **kwargs):
        super().__init__(secret, strict, **kwargs)
        self.ours = ours
        self.deliveries = Deliveries()
        self._state_id: int | None = None

    @defer.inlineCallbacks
    def _remembered(self):
        """The deliveries, with those the database kept loaded at first use."""
        if self._state_id is None:
            state_id = yield self.master.db.state.getObjectId(*STATE_OBJECT)
            kept = yield self.master.db.state.getState(state_id, STATE_NAME, [])
            if self._state_id is None:
                self.deliveries.load(kept)
                self._state_id = state_id
        return self.deliveries

    @defer.inlineCallbacks
    def _get_payload(self, request):
        """Buildbot's, with SHA-256 for SHA-1 and the size limit: the payload as a dict."""
        body = body_of(request)
        if self._secret:
            p = Properties()
            p.master = self.master
            secret = yield p.render(self._secret)
            problem = signature_problem(body, request.getHeader(SIGNATURE_HEADER), secret)
            if problem:
                raise ValueError(problem)
        elif self._strict:
            raise ValueError("no required signature: the hook has no secret configured")
        content_type = request.getHeader(b"Content-Type")
        if content_type == b"application/json":
            return json.loads(body)
        if content_type == b"application/x-www-form-urlencoded":
            return json.loads(bytes2unicode(request.args[b"payload"][0]))
        raise ValueError(f"Unknown content type: {content_type}")

    @defer.inlineCallbacks
    def process(self, request):
        # The size, the SHA-256 signature, the content type, the JSON; a refusal is a
        # ValueError, which Buildbot's change hook answers 400 with its text.
        payload = yield self._get_payload(request)
        delivery = bytes2unicode(request.getHeader(DELIVERY_HEADER) or b"")
        # The delivery header is not signed: a replayer can change it, but not the body,
        # so its signature is remembered too (GitHub's redelivery repeats both).
        keys = [f"body {bytes2unicode(request.getHeader(SIGNATURE_HEADER) or b'')}"]
        keys += [f"id {delivery}"] if delivery else []
        deliveries = yield self._remembered()
        if not deliveries.first_time(keys):
            answer = f"already seen: delivery {delivery or '(no id)'} was taken before; nothing is queued again"
            log.msg(f"GitHub hook: {answer}")
            request.write(html.escape(answer + "\n", quote=False).encode())
            return [], "git"
        try:
            result = yield self._take(request, payload)
        except Exception:
            # Refused or failed: GitHub's "Redeliver" (same id) must be taken again.
            deliveries.forget(keys)
            raise
        yield self.master.db.state.setState(self._state_id, STATE_NAME, deliveries.keys())
        return result

    @defer.inlineCallbacks
    def _take(self, request, payload):
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
