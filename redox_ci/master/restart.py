"""A master that died mid-pipeline: at the next start, one pipeline again, nothing twice.

When the master starts, Buildbot's housekeeping for its previous incarnation
(``masterStopped`` / ``expireMasters``) ends that incarnation's unfinished builds with RETRY
and puts every request it had claimed back in the queue. The interrupted plan build's
request then runs again, as a new plan build, and would trigger its jobs again; the job
requests the old plan build had triggered would run too, beside them, with no plan build
waiting for them.

``RestartCleanup`` runs at the master's start, before any worker can connect (the service
manager is configured before the workers' port opens):
- a request whose parent build (the plan build that triggered it) is complete is an
  orphan (unless it is a person's Rebuild of a job): cancelled, and the old plan build's
  summary says why;
- a plan request interrupted more than ``retries`` times (restarts or lost workers) is
  cancelled instead of running again: an interrupted pipeline runs again once.

Results recorded before the crash stay as they were: finished job builds keep their
results, and the new plan build does not build them again (the cache, or the
known-failure record, answers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from buildbot.data import resultspec
from buildbot.process.results import RETRY
from buildbot.util import service
from twisted.internet import defer
from twisted.python import log

NAME = "restart-cleanup"
ORPHAN_REASON = "its plan build was interrupted by a master restart"


def orphaned(buildset: dict, parent_build: dict | None) -> bool:
    """Whether a triggered request's parent build is gone: finished (or missing), so nothing
    waits for the request. A Rebuild of a job keeps its plan build as parent, finished long
    ago: a person asked for it, so it is not an orphan."""
    if buildset.get("rebuilt_buildid") is not None:
        return False
    return parent_build is None or bool(parent_build["complete"])


def interrupted_verdict(results: Iterable[int | None], retries: int) -> str | None:
    """None when an interrupted plan request may run again; otherwise why it does not."""
    interrupted = sum(1 for r in results if r == RETRY)
    if interrupted <= retries:
        return None
    return f"interrupted {interrupted} times (master restarts or lost workers), not run again"


def plan_summary(cancelled: int, runs_again: bool) -> str:
    tail = "the pipeline runs again" if runs_again else "the pipeline is not run again"
    return f"interrupted by a master restart: {cancelled} requests it triggered cancelled; {tail}"


class RestartCleanup(service.BuildbotService):
    """At start: cancel the orphans of interrupted plan builds, and cap their reruns."""

    name = NAME

    def checkConfig(self, plan_builder: str, retries: int):
        if retries < 0:
            raise ValueError("retries must be 0 or more")

    def reconfigService(self, plan_builder: str, retries: int):
        self.plan_builder = plan_builder
        self.retries = retries
        return super().reconfigService()

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        try:
            yield defer.ensureDeferred(self.cleanup())
        except Exception:  # the master still starts; Buildbot's own behaviour stands
            log.err(None, "cleaning up after a master restart")

    async def cleanup(self) -> None:
        data = self.master.data
        plan_ids = [b["builderid"] for b in await data.get(
            ("builders",), filters=[resultspec.Filter("name", "eq", [self.plan_builder])])]
        pending = await data.get(("buildrequests",), filters=[resultspec.Filter("complete", "eq", [False])])
        orphans: dict[int, list[int]] = defaultdict(list)
        rerun: dict[int, bool] = {}
        for req in pending:
            buildset = await data.get(("buildsets", req["buildsetid"]))
            parent = buildset["parent_buildid"]
            if parent is not None:
                if orphaned(buildset, await data.get(("builds", parent))):
                    orphans[parent].append(req["buildrequestid"])
            elif req["builderid"] in plan_ids:
                builds = await data.get(("builds",), filters=[
                    resultspec.Filter("buildrequestid", "eq", [req["buildrequestid"]])])
                verdict = interrupted_verdict([b["results"] for b in builds], self.retries)
                if builds:
                    rerun[max(b["buildid"] for b in builds)] = verdict is None
                if verdict:
                    self.cancel(req["buildrequestid"], verdict)
        for parent, brids in orphans.items():
            for brid in brids:
                self.cancel(brid, ORPHAN_REASON)
            await data.updates.setBuildStateString(parent, plan_summary(len(brids), rerun.get(parent, False)))

    def cancel(self, brid: int, reason: str) -> None:
        log.msg(f"{NAME}: cancelling build request {brid}: {reason}")
        self.master.data.control("cancel", {"reason": reason}, ("buildrequests", str(brid)))


def restart_cleanup(plan_builder: str, retries: int) -> RestartCleanup:
    return RestartCleanup(plan_builder, retries, name=NAME)
