"""The "Commits" dashboard: a page per commit, trends across commits, a badge per branch.

A Buildbot WSGI dashboard (Flask). Buildbot's UI shows its ``index.html`` (each branch's
newest commits); the other pages are whole pages served beside it with a strict Content
Security Policy (no script, nothing from another site). Everything comes from the
master's data API: the plan builder's builds (their ``plan`` property) and the builds
each one triggered; the nightly reproducibility verdicts come from the same summaries
the Reproducibility page reads. Each request gathers its data in one call on Buildbot's
reactor (the WSGI app runs in a thread), then the pure modules decide and draw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from html import escape

from flask import Flask, Response, abort, request

from .. import names
from ..cache.reports import read_summaries
from ..config import Settings
from ..errors import RedoxCIError
from ..repro.run import DEFAULT_SYSTEM
from . import commits_view as view
from .pipeline import PLAN_BUILDER
from .commits import Commit, JobBuild, Link, Outcome, Pipeline, branches_of, commits_of, job_build_facts, \
    job_rows, repro_verdicts, trends, unsourced
from .svg import badge

# Plan builds read to list commits: a few weeks of pushes and forced builds on every branch.
LISTED_PIPELINES = 200
# Commits the UI's own page shows per branch; the branch page shows them all.
INDEX_COMMITS = 10
# Steps whose logs are linked from a job's row; "settings to worker" and the like are not.
HIDDEN_LOG_STEPS = ("settings to worker",)
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'self'")
# Badges are fetched through caching proxies (GitHub's camo): a minute keeps them fresh.
BADGE_MAX_AGE = 60


@dataclass
class Reader:
    """Reads the data API; runs on the reactor (``data`` is ``master.data``).

    A listing reads each plan build's buildset (branch, revision, scheduler), not the
    build's properties: those hold the whole plan, large for the real flake. The plan is
    read for the pipelines shown in full.
    """

    data: object
    urls: view.Urls

    async def plan_builderid(self) -> int | None:
        for b in await self.data.get(("builders",)):
            if b["name"] == PLAN_BUILDER:
                return b["builderid"]
        return None

    async def props(self, buildid: int) -> dict:
        return unsourced(await self.data.get(("builds", buildid, "properties")) or {})

    async def pipelines(self, limit: int = LISTED_PIPELINES) -> list[Pipeline]:
        builderid = await self.plan_builderid()
        if builderid is None:
            return []
        builds = await self.data.get(("builders", builderid, "builds"), order=["-number"], limit=limit)
        return list(await _all(self.pipeline(b) for b in builds))

    async def pipeline(self, build: dict) -> Pipeline:
        request = await self.data.get(("buildrequests", build["buildrequestid"]))
        buildset = await self.data.get(("buildsets", request["buildsetid"]))
        props = unsourced(await self.data.get(("buildsets", request["buildsetid"], "properties")) or {})
        stamp = (buildset.get("sourcestamps") or [{}])[0]
        # Forced at a branch tip: the revision is the one the plan evaluated.
        plan = None if stamp.get("revision") else (await self.props(build["buildid"])).get("plan")
        return Pipeline.of(build, {**props, "branch": stamp.get("branch"), "revision": stamp.get("revision"),
                                   "plan": plan})

    async def with_plan(self, pipeline: Pipeline) -> Pipeline:
        return replace(pipeline, plan=(await self.props(pipeline.buildid)).get("plan"))

    async def job_builds(self, pipeline: Pipeline, with_logs: bool) -> list[JobBuild]:
        async def one(b: dict) -> JobBuild:
            logs = await self.logs(b["buildid"]) if with_logs else []
            return JobBuild(b, await self.props(b["buildid"]), logs, self.urls.build(b["builderid"], b["number"]))
        builds = await _all(one(b) for b in await self.data.get(("builds", pipeline.buildid, "triggered_builds")))
        # A system's evaluation build is part of the plan, not a job of the commit.
        return [jb for jb in builds if job_build_facts(jb.props) is not None]

    async def logs(self, buildid: int) -> list[Link]:
        links = []
        for step in await self.data.get(("builds", buildid, "steps")):
            if step["name"] in HIDDEN_LOG_STEPS:
                continue
            for log in await self.data.get(("steps", step["stepid"], "logs")):
                # A step's own output is "stdio" in every step: name it by its step.
                label = f"{step['name']} log" if log["name"] == "stdio" else log["name"]
                links.append(Link(label, self.urls.log(log["logid"])))
        return links


async def _all(coroutines) -> list:
    """Await several data-API reads at once (the database answers them in its threads)."""
    from twisted.internet import defer

    return await defer.gatherResults([defer.ensureDeferred(c) for c in coroutines], consumeErrors=True)


def _on_reactor(app: Flask, work):
    """Run ``work(reader)`` (a coroutine function) on Buildbot's reactor; wait for its answer."""
    from twisted.internet import defer, reactor
    from twisted.internet.threads import blockingCallFromThread

    reader = Reader(app.buildbot_api.master.data, app.config["URLS"])
    return blockingCallFromThread(reactor, lambda: defer.ensureDeferred(work(reader)))


def _html(text: str, status: int = 200) -> Response:
    return Response(text, status=status, mimetype="text/html",
                    headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


def _branch_arg(settings: Settings) -> str:
    branch = request.args.get("branch") or settings.flake.branches[0]
    if not names.BRANCH.fits(branch):
        abort(_html(f"<p>Not a branch name: {escape(branch)} ({names.BRANCH_WORDS}).</p>", 400))
    return branch


def make_app(settings: Settings, credentials: dict | None = None) -> Flask:
    app = Flask("redox_ci_commits")
    urls = view.Urls(settings.www.url)
    app.config["URLS"] = urls
    image = settings.boot.image_attr

    def repro_for(revision: str) -> tuple[dict, str]:
        if not settings.cache.enabled:
            return {}, "No nightly reproducibility verdicts: the binary cache is not configured ([cache])."
        try:
            return repro_verdicts(read_summaries(settings.cache, credentials), revision, DEFAULT_SYSTEM), ""
        except RedoxCIError as e:
            return {}, f"Cannot read the nightly reports: {e}"

    @app.route("/index.html")
    def index():
        async def work(reader: Reader):
            return await reader.pipelines()
        pipelines = _on_reactor(app, work)
        branches = branches_of(pipelines, settings.flake.branches)
        by_branch = {b: commits_of(pipelines, b) for b in branches}
        return _html(view.index_fragment(branches, by_branch, urls, INDEX_COMMITS))

    @app.route("/branch.html")
    def branch_page():
        branch = _branch_arg(settings)
        pipelines = _on_reactor(app, lambda reader: reader.pipelines())
        return _html(view.branch_page(branch, commits_of(pipelines, branch), urls))

    @app.route("/commit.html")
    def commit_page():
        rev, build = request.args.get("rev", ""), request.args.get("build", "")
        if (rev and not names.REVISION.fits(rev)) or (build and not build.isdigit()) or not (rev or build):
            abort(_html(f"<p>Give a commit (rev: {names.REVISION_WORDS}) or a pipeline (build: its id).</p>", 400))

        async def work(reader: Reader):
            pipelines = await reader.pipelines()
            chosen = [p for p in pipelines if (not rev or p.revision == rev) and (not build or p.buildid == int(build))]
            if not chosen:
                return None
            pipeline = await reader.with_plan(chosen[0])
            commit = next(c for c in commits_of(pipelines, pipeline.branch)
                          if pipeline.buildid in {p.buildid for p in c.pipelines})
            return commit, pipeline, await reader.job_builds(pipeline, with_logs=True)

        found = _on_reactor(app, work)
        if found is None:
            abort(_html("<p>No pipeline of that commit among the recent ones.</p>", 404))
        commit, pipeline, builds = found
        verdicts, note = repro_for(commit.revision)
        rows = job_rows(pipeline, builds, verdicts)
        return _html(view.commit_page(commit, pipeline, rows, urls, note))

    @app.route("/trends.html")
    def trends_page():
        branch = _branch_arg(settings)
        count = settings.www.trend_commits

        async def work(reader: Reader):
            oldest_first: list[Commit] = commits_of(await reader.pipelines(), branch)[:count][::-1]
            builds = await _all(reader.job_builds(c.latest, with_logs=False) for c in oldest_first)
            return [(c.revision, job_rows(c.latest, b)) for c, b in zip(oldest_first, builds)]

        return _html(view.trends_page(branch, trends(_on_reactor(app, work), image), urls))

    @app.route("/badge/<path:name>")
    def branch_badge(name: str):
        branch = name.removesuffix(".svg")
        if not name.endswith(".svg") or not names.BRANCH.fits(branch):
            abort(404)
        ran = [p for c in commits_of(_on_reactor(app, lambda reader: reader.pipelines()), branch)
               for p in c.pipelines]
        # The newest finished pipeline: a badge that said "running" at every push would say little.
        done = sorted((p for p in ran if p.outcome != Outcome.RUNNING), key=lambda p: -p.buildid)
        outcome = done[0].outcome.value if done else Outcome.RUNNING.value if ran else "unknown"
        message = outcome if ran else "no pipeline"
        return Response(badge(f"redox-ci {branch}", message, outcome), mimetype="image/svg+xml",
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                                 "Cache-Control": f"max-age={BADGE_MAX_AGE}", "X-Content-Type-Options": "nosniff"})

    return app


def commits_plugin(settings: Settings, credentials: dict | None = None) -> dict:
    """The ``wsgi_dashboards`` entry, beside Reproducibility."""
    return {"name": view.DASHBOARD_NAME, "caption": "Commits", "app": make_app(settings, credentials),
            # The UI looks an icon up as "Fa" + its name capitalised, else by the name as given:
            # a name of two words must be given whole.
            "order": 10, "icon": "FaCodeBranch"}
