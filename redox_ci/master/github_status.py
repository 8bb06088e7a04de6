"""Commit statuses on GitHub: the plan, each stage, each boot and failed attributes.

Buildbot's ``GitHubStatusPush`` names a status after the real builder, which would make
every job of a stage one context; this subclass keeps its HTTP session, token handling
and ``createStatus`` and chooses the contexts itself (``redox-ci/plan``,
``redox-ci/stage/<stage>``, ``redox-ci/<system>/<attr>``). Builds and the plan's steps
arrive through Buildbot's report generators. Each status links to the commit's page.

GitHub lists a few dozen contexts usefully, so failed attributes past a cap per commit
have no status of their own: their stage's status names them. A post is tried again on
5xx answers, unreachable networks and rate limits (403/429 with Retry-After or
X-RateLimit-Reset), waiting what GitHub asks; a post that still fails is logged and
dropped. Reporters run beside the builds, so a failed post never changes a build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Mapping

from buildbot import interfaces
from buildbot.data import resultspec
from buildbot.plugins import util
from buildbot.process.properties import Properties
from buildbot.process.results import (CANCELLED, EXCEPTION, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS,
                                      statusToString)
from buildbot.reporters.generators.build import BuildStartEndStatusGenerator
from buildbot.reporters.github import GitHubStatusPush
from buildbot.reporters.message import MessageFormatterRenderable
from twisted.internet import defer, task
from twisted.python import log
from zope.interface import implementer

from ..config import LoadedSettings
from ..plan import Job, JobStatus, Plan
from ..secrets_file import GITHUB_STATUS_TOKEN
from .boot import BOOT_STAGE
from .commits import Commit, job_build_facts, reason_of, unsourced
from .commits_view import Urls
from .pipeline import PLAN_BUILDER

CONTEXT_PREFIX = "redox-ci"
PLAN_CONTEXT = f"{CONTEXT_PREFIX}/plan"
# GitHub refuses a longer description.
DESCRIPTION_CHARS = 140
# 5xx and network errors: 1, 2, 4, ... seconds, at most a minute apart.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# GitHub's primary rate limit resets within the hour; a longer wait means a wrong clock
# or answer, and the status is dropped.
RATE_LIMIT_MAX_WAIT_SECONDS = 3600.0
# Results that make an attribute "failed" (a cancelled job was superseded, not failed).
FAILED_RESULTS = (FAILURE, EXCEPTION)
# Buildbot's results as GitHub's states; SKIPPED counts as success, as in GitHubStatusPush.
STATES = {SUCCESS: "success", WARNINGS: "success", SKIPPED: "success", FAILURE: "failure",
          EXCEPTION: "error", CANCELLED: "error", RETRY: "pending"}


@dataclass(frozen=True)
class Status:
    sha: str
    context: str
    state: str
    description: str
    target_url: str


def commit_page_url(www_url: str, sha: str) -> str:
    """The commit's page in the web UI (the Commits dashboard's), which every status links to."""
    return Urls(www_url).commit(Commit(sha, []))


def revision_of(buildset: dict | None, props: dict) -> str | None:
    """The commit a build is for; None for a build forced at a branch tip (no status)."""
    for ss in (buildset or {}).get("sourcestamps") or []:
        if ss.get("revision"):
            return ss["revision"]
    return props.get("got_revision") or props.get("revision") or None


def stage_context(stage: str) -> str:
    return f"{CONTEXT_PREFIX}/stage/{stage}"


def job_context(job: Job) -> str:
    """``redox-ci/<system>/<attr>`` (``checks.<attr>`` for a check that is no package)."""
    system, rest = job.name.split(".", 1)
    return f"{CONTEXT_PREFIX}/{system}/{rest}"


def state_of(results: int | None, complete: bool) -> str:
    return STATES.get(results, "error") if complete else "pending"


def description(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= DESCRIPTION_CHARS else line[:DESCRIPTION_CHARS - 1] + "…"


def planned_stages(plan: Plan, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Stage -> names of its jobs, in the plan's order, for the stages that have jobs."""
    out: dict[str, list[str]] = {}
    for job in plan.jobs:
        if job.stage not in skip:
            out.setdefault(job.stage, []).append(job.name)
    return out


def stage_pending(plan: Plan, sha: str, url: str, skip: tuple[str, ...] = ()) -> list[Status]:
    """A pending status per stage once the plan is known: how many jobs wait in it."""
    out = []
    for stage, names in planned_stages(plan, skip).items():
        cached = sum(1 for j in plan.jobs if j.stage == stage and j.status == JobStatus.CACHED)
        text = jobs_text(len(names)) + (f", {cached} cached" if cached else "") + ", waiting"
        out.append(Status(sha, stage_context(stage), "pending", description(text), url))
    return out


def stages_not_run(plan: Plan, finished: set[str], plan_results: int, sha: str, url: str,
                   skip: tuple[str, ...] = ()) -> list[Status]:
    """An error status for each planned stage whose step never ran, so that none stays
    pending after its pipeline ended."""
    text = description(f"not run: the pipeline ended {statusToString(plan_results)}")
    return [Status(sha, stage_context(stage), "error", text, url)
            for stage in planned_stages(plan, skip) if stage not in finished]


def jobs_text(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def counts_text(results: dict[str, int], cached: int) -> str:
    """"5 jobs: 2 successes, 1 failure, 2 cached": job builds by result, and cached jobs."""
    values = list(results.values())
    counts = [f"{values.count(r)} {statusToString(r, values.count(r))}" for r in sorted(set(values))]
    return f"{jobs_text(len(results) + cached)}: " + ", ".join(counts + ([f"{cached} cached"] if cached else []))


def stage_summary(results: dict[str, int], cached: int, unlisted: list[str]) -> str:
    """One line for a finished stage: its jobs by result, and the failed attributes that
    have no status of their own (past the cap)."""
    text = counts_text(results, cached)
    if unlisted:
        text += f"; also failed: {', '.join(unlisted)}"
    return description(text)


def plan_summary(results: int, jobs: dict[str, tuple[str, int]], cached: int) -> str:
    """One line for a finished pipeline: its result, its jobs (name -> stage, result) by
    result, and the stages that had failures."""
    failed = list(dict.fromkeys(stage for stage, r in jobs.values() if r in FAILED_RESULTS))
    text = f"{statusToString(results)}: {counts_text({n: r for n, (_, r) in jobs.items()}, cached)}"
    if failed:
        text += f"; failures in {', '.join(failed)}"
    return description(text)


def stage_state(results: dict[str, int], step_results: int) -> str:
    if any(r in FAILED_RESULTS for r in results.values()):
        return "failure"
    return state_of(step_results, True)


class FailureCap:
    """Which failed attributes of a plan get a status of their own: the first ``cap``
    claimed. A claim is synchronous, so the job's report and its stage's end agree."""

    def __init__(self, cap: int):
        self.cap = cap
        self._claimed: dict[int, list[str]] = {}

    def claim(self, plan_id: int, name: str) -> bool:
        claimed = self._claimed.setdefault(plan_id, [])
        if name in claimed:
            return True
        if len(claimed) >= self.cap:
            return False
        claimed.append(name)
        return True

    def forget(self, plan_id: int) -> None:
        self._claimed.pop(plan_id, None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def retry_delay(code: int | None, headers: Mapping[str, str], attempt: int, max_attempts: int,
                now: float) -> float | None:
    """Seconds to wait before trying again after ``attempt`` tries, or None to give up.

    ``code`` None is a post that got no answer (refused, reset, timed out). A 403 is a
    rate limit only with GitHub's rate-limit headers; without them it is a refusal.
    """
    if attempt >= max_attempts:
        return None
    backoff = min(BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)
    if code is None or code >= 500:
        return backoff
    if code not in (403, 429):
        return None
    retry_after = _header(headers, "retry-after")
    reset = _header(headers, "x-ratelimit-reset")
    remaining = _header(headers, "x-ratelimit-remaining")
    try:
        if retry_after is not None:
            wait = float(retry_after)
        elif reset is not None and remaining in (None, "0"):
            wait = float(reset) - now
        elif code == 429:
            wait = backoff
        else:
            return None
    except ValueError:
        return None
    return max(wait, BACKOFF_FIRST_SECONDS) if wait <= RATE_LIMIT_MAX_WAIT_SECONDS else None


def response_headers(response) -> dict[str, str]:
    """The headers of an answer of Buildbot's HTTP session. Its wrapper shows the code and
    body only; the rate-limit headers are read from the treq (or requests) answer inside."""
    raw = getattr(response, "_res", None)
    headers = getattr(raw, "headers", None)
    if headers is None:
        return {}
    if hasattr(headers, "getAllRawHeaders"):  # twisted.web.http_headers.Headers
        return {k.decode("latin-1"): v[-1].decode("latin-1") for k, v in headers.getAllRawHeaders()}
    return dict(headers)


@implementer(interfaces.IReportGenerator)
class PlanStepGenerator:
    """Reports the plan build's steps as they finish: once the plan is known its stages
    become pending, and each stage step's end is its stage's status."""

    wanted_event_keys: ClassVar[list] = [("steps", None, "finished")]

    def __init__(self, plan_builder: str):
        self.plan_builder = plan_builder

    def check(self):
        pass

    def generate_name(self):
        return f"PlanStepGenerator_{self.plan_builder}"

    async def _generate(self, master, step):
        build = await master.data.get(("builds", step["buildid"]))
        builder = await master.data.get(("builders", build["builderid"]))
        if builder["name"] != self.plan_builder:
            return None
        return {"step": step, "build": build}

    def generate(self, master, reporter, key, msg):
        return defer.ensureDeferred(self._generate(master, msg))


class CommitStatusPush(GitHubStatusPush):
    """Commit statuses for redox-ci's pipeline (see the module's docstring)."""

    name = "redox-ci-github-status"

    def checkConfig(self, token, repository: str, baseURL: str, www_url: str, plan_builder: str,
                    stage_steps: dict[str, str], boot_stage: str, max_attribute_statuses: int,
                    max_attempts: int, **kwargs):
        super().checkConfig(token, baseURL=baseURL, generators=self._generators(plan_builder), **kwargs)

    def reconfigService(self, *args, **kwargs):
        return defer.ensureDeferred(self._reconfig(*args, **kwargs))

    async def _reconfig(self, token, repository: str, baseURL: str, www_url: str, plan_builder: str,
                        stage_steps: dict[str, str], boot_stage: str, max_attribute_statuses: int,
                        max_attempts: int, **kwargs):
        self.owner, self.repo = repository.split("/", 1)
        self.www_url = www_url
        self.plan_builder = plan_builder
        # Step name -> stage, of the plan build's stage steps.
        self.stage_steps = dict(stage_steps)
        self.boot_stage = boot_stage
        self.max_attempts = max_attempts
        if getattr(self, "cap", None) is None or self.cap.cap != max_attribute_statuses:
            self.cap = FailureCap(max_attribute_statuses)
        # Kept across reconfigurations: posts in flight and their order.
        self._last: dict[tuple[str, str], defer.Deferred] = getattr(self, "_last", {})
        self._waits: set[defer.Deferred] = getattr(self, "_waits", set())
        # Plan builds whose stages went pending.
        self._planned: set[int] = getattr(self, "_planned", set())
        await super().reconfigService(token, baseURL=baseURL, generators=self._generators(plan_builder), **kwargs)
        # Not awaited: a slow or absent GitHub must not hold up the master's start.
        defer.ensureDeferred(self._check_access()).addErrback(log.err, "GitHub statuses: access check")

    async def _check_access(self) -> None:
        """Say at start, in twistd.log, whether the token can see the repository: a wrong
        token or name otherwise shows only when the first status fails."""
        props = Properties()
        props.master = self.master
        where = f"GitHub statuses for {self.owner}/{self.repo}"
        try:
            response = await self._http.get(f"/repos/{self.owner}/{self.repo}",
                                            headers=await self._get_auth_header(props))
        except Exception as e:
            log.msg(f"{where}: GitHub did not answer at start ({e}); statuses will be tried as builds end")
            return
        verdict = {200: "the token is accepted", 401: "the token is refused (401): check github_status_token",
                   403: "the token may not read the repository (403)",
                   404: "the token cannot see the repository (404): check the name and the token's repositories"}
        log.msg(f"{where}: {verdict.get(response.code, f'GitHub answered HTTP {response.code} at start')}")

    @staticmethod
    def _generators(plan_builder: str) -> list:
        # The formatters' text is unused: sendMessage writes each description.
        text = MessageFormatterRenderable("")
        return [BuildStartEndStatusGenerator(start_formatter=text, end_formatter=text),
                PlanStepGenerator(plan_builder)]

    def getResponsibleUsersForBuild(self, master, buildid):
        # Statuses name no one: spare the generators' look-up of each build's changes.
        return defer.succeed([])

    def stopService(self):
        for wait in list(self._waits):
            wait.cancel()
        return super().stopService()

    # --- from events to statuses ---------------------------------------------
    def sendMessage(self, reports):
        return defer.ensureDeferred(self._send(reports))

    async def _send(self, reports):
        for report in reports:
            try:
                if "step" in report:
                    statuses = await self._step_statuses(report["step"], report["build"])
                else:
                    statuses = await self._build_statuses(report["builds"][0])
            except Exception as e:  # a status never stops the others, nor a build
                log.err(e, "GitHub statuses: cannot make the statuses of a report")
                continue
            for status in statuses:
                await self._post_in_order(status)

    async def _build_statuses(self, build: dict) -> list[Status]:
        props = unsourced(build["properties"])
        sha = revision_of(build.get("buildset"), props)
        if not sha:
            return []
        url = commit_page_url(self.www_url, sha)
        complete = build["complete"]
        if build["builder"]["name"] == self.plan_builder:
            if not complete:
                return [Status(sha, PLAN_CONTEXT, "pending", "evaluating the flake", url)]
            plan = Plan.from_json(props["plan"]) if props.get("plan") else Plan("", [])
            cached = sum(1 for j in plan.jobs if j.status == JobStatus.CACHED)
            text = plan_summary(build["results"], await self._children(build["buildid"]), cached)
            plan_status = Status(sha, PLAN_CONTEXT, state_of(build["results"], complete), text, url)
            self.cap.forget(build["buildid"])
            self._planned.discard(build["buildid"])
            return [*await self._stages_not_run(build, sha, url), plan_status]
        facts = job_build_facts(props)
        if facts is None:
            return []
        job = facts.job
        context = job_context(job)
        text = description(f"{statusToString(build['results'])}: {reason_of(build['state_string'])}" if complete
                           else build["state_string"])
        if job.stage == self.boot_stage:
            return [Status(sha, context, state_of(build["results"], complete), text, url)]
        parent = (build.get("buildset") or {}).get("parent_buildid")
        if complete and build["results"] in FAILED_RESULTS and parent and self.cap.claim(parent, job.name):
            return [Status(sha, context, state_of(build["results"], complete), text, url)]
        return []

    async def _stages_not_run(self, build: dict, sha: str, url: str) -> list[Status]:
        """Stages still pending when the plan build ends (cancelled, superseded, an
        exception): their steps never started, so no step event will end them."""
        plan = unsourced(build["properties"]).get("plan")
        if not plan:
            return []
        steps = await self.master.data.get(("builds", build["buildid"], "steps"))
        started = {self.stage_steps[s["name"]] for s in steps if s["name"] in self.stage_steps and s["complete"]}
        return stages_not_run(Plan.from_json(plan), started, build["results"], sha, url, skip=(self.boot_stage,))

    async def _step_statuses(self, step: dict, build: dict) -> list[Status]:
        """The stages become pending with the first step that ends with the plan known;
        each stage step's end is its stage's status."""
        name, buildid = step["name"], build["buildid"]
        stage = self.stage_steps.get(name)
        if buildid in self._planned and stage is None:
            return []
        props = unsourced(await self.master.data.get(("builds", buildid, "properties")))
        buildrequest = await self.master.data.get(("buildrequests", build["buildrequestid"]))
        buildset = await self.master.data.get(("buildsets", buildrequest["buildsetid"]))
        sha = revision_of(buildset, props)
        if not sha or not props.get("plan"):
            return []
        plan = Plan.from_json(props["plan"])
        url = commit_page_url(self.www_url, sha)
        out = []
        if buildid not in self._planned:  # decided at once: one pending per stage, before its end
            self._planned.add(buildid)
            out = [s for s in stage_pending(plan, sha, url, skip=(self.boot_stage,))
                   if stage is None or s.context != stage_context(stage)]
        if stage is None or stage == self.boot_stage or step["results"] == SKIPPED:
            return out
        results = {name: r for name, (s, r) in (await self._children(buildid)).items() if s == stage}
        failed = sorted(n for n, r in results.items() if r in FAILED_RESULTS)
        unlisted = [n for n in failed if not self.cap.claim(buildid, n)]
        cached = sum(1 for j in plan.jobs if j.stage == stage and j.status == JobStatus.CACHED)
        return [*out, Status(sha, stage_context(stage), stage_state(results, step["results"]),
                             stage_summary(results, cached, unlisted), url)]

    async def _children(self, plan_buildid: int) -> dict[str, tuple[str, int]]:
        """Job name -> (stage, result) of the finished builds the plan build started (the
        last build of each: a retried job's first build was RETRY)."""
        out = {}
        data = self.master.data
        buildsets = await data.get(("buildsets",), filters=[resultspec.Filter("parent_buildid", "eq", [plan_buildid])])
        for bs in buildsets:
            requests = await data.get(("buildrequests",), filters=[resultspec.Filter("buildsetid", "eq", [bs["bsid"]])])
            for br in requests:
                for b in await data.get(("buildrequests", br["buildrequestid"], "builds")):
                    facts = job_build_facts(unsourced(await data.get(("builds", b["buildid"], "properties"))))
                    if facts is not None and b["complete"]:
                        out[facts.job.name] = (facts.job.stage, b["results"])
        return out

    # --- posting ----------------------------------------------------------------
    async def _post_in_order(self, status: Status) -> None:
        """Posts of one context go out in order: a retried pending status never lands
        after the final one."""
        key = (status.sha, status.context)
        previous, done = self._last.get(key), defer.Deferred()
        self._last[key] = done
        try:
            if previous is not None:
                await previous
            await self._post(status, superseded=lambda: self._last.get(key) is not done)
        finally:
            if self._last.get(key) is done:
                del self._last[key]
            done.callback(None)

    async def _post(self, status: Status, superseded) -> bool:
        props = Properties()
        props.master = self.master
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1 and superseded():
                log.msg(f"GitHub status {status.context} {status.state} on {status.sha[:12]} dropped after "
                        f"{attempt - 1} attempt(s): a newer status of that context follows")
                return False
            code, headers, why = None, {}, ""
            try:
                response = await self.createStatus(self.owner, self.repo, status.sha, status.state, props,
                                                   target_url=status.target_url, context=status.context,
                                                   description=status.description)
                code, headers = response.code, response_headers(response)
                if 200 <= code < 300:
                    return True
                body = await response.content()
                why = f"HTTP {code}: {description(body.decode('utf-8', 'replace'))}"
            except Exception as e:  # no answer: refused, reset, DNS, TLS
                why = f"no answer: {e}"
            delay = retry_delay(code, headers, attempt, self.max_attempts, time.time())
            if delay is None:
                log.msg(f"GitHub status {status.context} {status.state} on {status.sha[:12]} not posted "
                        f"after {attempt} attempt(s): {why}")
                return False
            log.msg(f"GitHub status {status.context} {status.state}: {why}; trying again in {delay:.0f} s")
            try:
                await self._wait(delay)
            except defer.CancelledError:
                log.msg(f"GitHub status {status.context} {status.state} not posted: the master is stopping")
                return False
        return False

    async def _wait(self, seconds: float) -> None:
        wait = task.deferLater(self.master.reactor, seconds, lambda: None)
        self._waits.add(wait)
        try:
            await wait
        finally:
            self._waits.discard(wait)


def services(loaded: LoadedSettings, stage_steps: list) -> list:
    """The reporter, when [github_status] is enabled; ``stage_steps`` are the plan build's
    TriggerStage steps (jobs' and boots')."""
    gh = loaded.settings.github_status
    if not gh.enabled:
        return []
    return [CommitStatusPush(
        util.Secret(GITHUB_STATUS_TOKEN), repository=gh.repository, baseURL=gh.api_url.rstrip("/"),
        www_url=loaded.settings.www.url, plan_builder=PLAN_BUILDER,
        stage_steps={s.name: s.stage for s in stage_steps}, boot_stage=BOOT_STAGE,
        max_attribute_statuses=gh.max_attribute_statuses, max_attempts=gh.max_attempts)]
